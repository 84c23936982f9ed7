"""`python -m sync_consumer [serve|migrate]`: streams -> ClickHouse until SIGTERM, or applies the
ClickHouse migrations and exits."""

from __future__ import annotations

from promo_libs.clickhouse.client import ClickHouse
from promo_libs.clickhouse.migrations import apply_migrations, load_migrations
from promo_libs.entrypoint import run_service
from sync_consumer.bootstrap import MIGRATIONS, build
from sync_consumer.config import SyncConsumerSettings


async def _migrate(settings: SyncConsumerSettings) -> list[int]:
    clickhouse = ClickHouse(settings)
    try:
        return await apply_migrations(
            clickhouse.connect(), settings.clickhouse_database, load_migrations(MIGRATIONS)
        )
    finally:
        await clickhouse.close()


def main() -> None:
    run_service("sync_consumer", "sync-consumer", SyncConsumerSettings, build, _migrate)


if __name__ == "__main__":
    main()
