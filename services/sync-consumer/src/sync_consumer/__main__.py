"""`python -m sync_consumer`: streams -> ClickHouse until SIGTERM."""

from __future__ import annotations

import asyncio

from promo_libs.config import load_settings
from promo_libs.grpc.server import serve
from promo_libs.logging import configure_logging
from sync_consumer.bootstrap import build
from sync_consumer.config import SyncConsumerSettings


async def _run(settings: SyncConsumerSettings) -> None:
    await serve(await build(settings), settings)


def main() -> None:
    settings = load_settings(SyncConsumerSettings)
    configure_logging("sync-consumer", settings.log_level)
    asyncio.run(_run(settings))


if __name__ == "__main__":
    main()
