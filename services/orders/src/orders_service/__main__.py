"""`python -m orders_service`: runs the order service until SIGTERM.

`python -m orders_service migrate` applies the database migrations and exits (the deployment's
migrations Job); serving applies them at start-up too.
"""

from __future__ import annotations

import argparse
import asyncio
import json

from orders_service.adapters.migrations import MIGRATIONS
from orders_service.bootstrap import build
from orders_service.config import OrdersSettings
from promo_libs.config import load_settings
from promo_libs.grpc.server import serve
from promo_libs.logging import configure_logging
from promo_libs.mongo.migrations import migrate


async def _run(settings: OrdersSettings) -> None:
    await serve(await build(settings), settings)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m orders_service", description=__doc__)
    parser.add_argument("command", nargs="?", choices=["serve", "migrate"], default="serve")
    command = parser.parse_args().command
    settings = load_settings(OrdersSettings)
    configure_logging("orders", settings.log_level)
    if command == "migrate":
        print(json.dumps({"applied": asyncio.run(migrate(settings, MIGRATIONS))}), flush=True)
        return
    asyncio.run(_run(settings))


if __name__ == "__main__":
    main()
