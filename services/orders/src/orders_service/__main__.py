"""`python -m orders_service [serve|migrate]`: runs the order service until SIGTERM, or applies its
MongoDB migrations and exits.
"""

from __future__ import annotations

from orders_service.adapters.migrations import MIGRATIONS
from orders_service.bootstrap import build
from orders_service.config import OrdersSettings
from promo_libs.entrypoint import run_service
from promo_libs.mongo.migrations import migrate


async def _migrate(settings: OrdersSettings) -> list[int]:
    return await migrate(settings, MIGRATIONS)


def main() -> None:
    run_service("orders_service", "orders", OrdersSettings, build, _migrate)


if __name__ == "__main__":
    main()
