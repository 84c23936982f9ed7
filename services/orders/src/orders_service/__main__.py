"""`python -m orders_service`: runs the order service until SIGTERM."""

from __future__ import annotations

import asyncio

from orders_service.bootstrap import build
from orders_service.config import OrdersSettings
from promo_libs.config import load_settings
from promo_libs.grpc.server import serve
from promo_libs.logging import configure_logging


async def _run(settings: OrdersSettings) -> None:
    await serve(await build(settings), settings)


def main() -> None:
    settings = load_settings(OrdersSettings)
    configure_logging("orders", settings.log_level)
    asyncio.run(_run(settings))


if __name__ == "__main__":
    main()
