"""`python -m sync_consumer [serve|migrate|replay-dead-letters|rebuild]`: streams -> ClickHouse
until SIGTERM; apply the ClickHouse migrations and exit; put every dead letter of the configured
streams back on its stream (once its cause is fixed) and exit; or recreate the analytics from
the services' replays (sync_consumer.rebuild). One command line for all (promo_libs.entrypoint).
"""

from __future__ import annotations

import argparse

from promo_libs import analytics_schema
from promo_libs.clickhouse.client import ClickHouse
from promo_libs.entrypoint import Command, migrate_command, print_json, run_service
from promo_libs.kit import ServiceKit
from sync_consumer import rebuild
from sync_consumer.adapters.redis_streams import replay_dead_letters
from sync_consumer.bootstrap import build
from sync_consumer.config import SyncConsumerSettings


async def _migrate(settings: SyncConsumerSettings) -> list[int]:
    clickhouse = ClickHouse(settings)
    try:
        return await analytics_schema.migrate(clickhouse.connect(), settings.clickhouse_database)
    finally:
        await clickhouse.close()


async def _replay(settings: SyncConsumerSettings, args: argparse.Namespace) -> int:
    del args
    async with ServiceKit(settings) as kit:
        redis = kit.redis(settings, timeout_seconds=10.0)
        replayed = {s: await replay_dead_letters(redis, s) for s in settings.stream_names}
    print_json({"replayed": replayed})
    return 0


COMMANDS: list[Command[SyncConsumerSettings]] = [
    migrate_command(_migrate),
    Command("replay-dead-letters", "put every dead letter back on its stream, once", _replay),
    Command(
        "rebuild",
        "recreate the ClickHouse analytics from MongoDB",
        rebuild.run,
        rebuild.add_arguments,
    ),
]


def main() -> None:
    run_service("sync_consumer", "sync-consumer", SyncConsumerSettings, build, COMMANDS)


if __name__ == "__main__":
    main()
