"""`python -m promocodes_service [serve|migrate|sweep|replay]`: runs the promo-code service until
SIGTERM, applies its MongoDB migrations, sweeps once (entrypoints.commands), or replays its
current state as events (promo_libs.entrypoint)."""

from __future__ import annotations

from promo_libs.entrypoint import run_service
from promo_libs.kit import mongo_migrate_command
from promo_libs.replay import replay_command
from promocodes_service.adapters.migrations import MIGRATIONS
from promocodes_service.bootstrap import build
from promocodes_service.config import PromocodesSettings
from promocodes_service.entrypoints.commands import SWEEP
from promocodes_service.replay import sources


def main() -> None:
    run_service(
        "promocodes_service",
        "promocodes",
        PromocodesSettings,
        build,
        [
            mongo_migrate_command(MIGRATIONS),
            SWEEP,
            replay_command("promocodes_service", MIGRATIONS, sources),
        ],
    )


if __name__ == "__main__":
    main()
