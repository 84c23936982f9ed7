"""`python -m sync_consumer [serve|migrate|replay-dead-letters]`: streams -> ClickHouse until
SIGTERM; or apply the ClickHouse migrations and exit; or put every dead letter of the
configured streams back on its stream (once its cause is fixed) and exit."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Sequence

from promo_libs import analytics_schema
from promo_libs.bus import redis_client
from promo_libs.clickhouse.client import ClickHouse
from promo_libs.config import load_settings
from promo_libs.entrypoint import run_service
from promo_libs.logging import configure_logging
from sync_consumer.adapters.redis_streams import replay_dead_letters
from sync_consumer.bootstrap import build
from sync_consumer.config import SyncConsumerSettings

REPLAY = "replay-dead-letters"


async def _migrate(settings: SyncConsumerSettings) -> list[int]:
    clickhouse = ClickHouse(settings)
    try:
        return await analytics_schema.migrate(clickhouse.connect(), settings.clickhouse_database)
    finally:
        await clickhouse.close()


async def _replay(settings: SyncConsumerSettings) -> dict[str, int]:
    redis = redis_client(settings, timeout_seconds=10.0)
    try:
        return {s: await replay_dead_letters(redis, s) for s in settings.stream_names}
    finally:
        await redis.aclose()


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == [REPLAY]:
        settings = load_settings(SyncConsumerSettings)
        configure_logging("sync-consumer", settings.log_level)
        print(json.dumps({"replayed": asyncio.run(_replay(settings))}), flush=True)
        return
    run_service("sync_consumer", "sync-consumer", SyncConsumerSettings, build, _migrate, args)


if __name__ == "__main__":
    main()
