"""`python -m users_service [serve|migrate|replay]`: runs the user service until SIGTERM, applies
its MongoDB migrations, or replays its current state as events (promo_libs.entrypoint)."""

from __future__ import annotations

from promo_libs.entrypoint import run_service
from promo_libs.kit import mongo_migrate_command
from promo_libs.replay import replay_command
from users_service.adapters.migrations import MIGRATIONS
from users_service.bootstrap import build
from users_service.config import UsersSettings
from users_service.replay import sources


def main() -> None:
    run_service(
        "users_service",
        "users",
        UsersSettings,
        build,
        [mongo_migrate_command(MIGRATIONS), replay_command("users_service", MIGRATIONS, sources)],
    )


if __name__ == "__main__":
    main()
