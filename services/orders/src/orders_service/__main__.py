"""`python -m orders_service [serve|migrate|sweep|replay]`: runs the order service until
SIGTERM, applies its MongoDB migrations, sweeps once (entrypoints.commands), or replays its
current state as events (promo_libs.entrypoint)."""

from __future__ import annotations

from orders_service.adapters.migrations import MIGRATIONS
from orders_service.bootstrap import build
from orders_service.config import OrdersSettings
from orders_service.entrypoints.commands import SWEEP
from orders_service.replay import sources
from promo_libs.entrypoint import run_service
from promo_libs.kit import mongo_migrate_command
from promo_libs.replay import replay_command


def main() -> None:
    run_service(
        "orders_service",
        "orders",
        OrdersSettings,
        build,
        [
            mongo_migrate_command(MIGRATIONS),
            SWEEP,
            replay_command("orders_service", MIGRATIONS, sources),
        ],
    )


if __name__ == "__main__":
    main()
