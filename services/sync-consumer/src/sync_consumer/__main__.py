"""`python -m sync_consumer`: streams -> ClickHouse until SIGTERM.

`python -m sync_consumer migrate` applies the ClickHouse migrations and exits (the deployment's
migrations Job); serving applies them at start-up too.
"""

from __future__ import annotations

import argparse
import asyncio
import json

from promo_libs.clickhouse.client import ClickHouse
from promo_libs.clickhouse.migrations import apply_migrations, load_migrations
from promo_libs.config import load_settings
from promo_libs.grpc.server import serve
from promo_libs.logging import configure_logging
from sync_consumer.bootstrap import MIGRATIONS, build
from sync_consumer.config import SyncConsumerSettings


async def _run(settings: SyncConsumerSettings) -> None:
    await serve(await build(settings), settings)


async def _migrate(settings: SyncConsumerSettings) -> list[int]:
    clickhouse = ClickHouse(settings)
    try:
        return await apply_migrations(
            clickhouse.connect(), settings.clickhouse_database, load_migrations(MIGRATIONS)
        )
    finally:
        await clickhouse.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m sync_consumer", description=__doc__)
    parser.add_argument("command", nargs="?", choices=["serve", "migrate"], default="serve")
    command = parser.parse_args().command
    settings = load_settings(SyncConsumerSettings)
    configure_logging("sync-consumer", settings.log_level)
    if command == "migrate":
        print(json.dumps({"applied": asyncio.run(_migrate(settings))}), flush=True)
        return
    asyncio.run(_run(settings))


if __name__ == "__main__":
    main()
