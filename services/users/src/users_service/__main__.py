"""`python -m users_service [serve|migrate]`: runs the user service until SIGTERM, or applies its
MongoDB migrations and exits.
"""

from __future__ import annotations

from promo_libs.entrypoint import run_service
from promo_libs.mongo.migrations import migrate
from users_service.adapters.migrations import MIGRATIONS
from users_service.bootstrap import build
from users_service.config import UsersSettings


async def _migrate(settings: UsersSettings) -> list[int]:
    return await migrate(settings, MIGRATIONS)


def main() -> None:
    run_service("users_service", "users", UsersSettings, build, _migrate)


if __name__ == "__main__":
    main()
