"""`python -m sync_consumer rebuild`: recreate the ClickHouse analytics from MongoDB (I6).

No process reads another service's collections: each owning service's replay command
(`python -m <service> replay`, promo_libs.replay) publishes its current state as events into a
dedicated rebuild stream, in the live envelope format with aggregate_version = the document's
version, and this command maps them with the live consumer's row mapping into fresh tables.

Steps:
1. hold the live consumers (adapters.rebuild_gate): every consumer of the group finishes the
   batch it is in and waits before the next one; the hold expires by itself if this dies, and
   a hold that lapsed (Redis failing, a stalled refresher) is detected: the rebuild confirms
   it right before the swap and aborts if it cannot (the `__rebuild` tables dropped, the live
   ones untouched), and confirms it again after the swap or fails loudly;
2. record each live stream's last id H: every entry up to H was committed in MongoDB before the
   hold, so the replay, read after it, already contains its effect;
3. create `<table>__rebuild` beside each table (same structure and engine, `CREATE TABLE AS`),
   run the replays and insert their rows there, each row with source position H of its live
   stream; fill every derived table (`users_analytics__rebuild`) with the very statement live
   consumers use to recompute it (adapters.derived), over every key;
4. swap in one statement, `RENAME TABLE t TO t__old, t__rebuild TO t, ...` (renamed under one
   lock: readers see all old or all new tables), drop the old tables. No materialized view
   exists to re-point: derived tables are recomputed by the consumer's own statements, which
   name tables, so there is no moment when an insert feeds nothing;
5. release the hold (always, and only our own token) and bump the generation after a swap
   (consumers cache no positions: every guard reads the tables).

Events arriving meanwhile wait in Redis (the consumers are held, nothing is acknowledged). Once
released, the version guard (service_layer.pipeline) stores an event only when its version is
above the replayed one, and derived keys are recomputed from the latest state: an event whose
effect the snapshot already holds changes nothing, one that happened after it is applied on top.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from aiochclient import ChClient
from pydantic import Field

from promo_libs import analytics_schema
from promo_libs.analytics_schema import (
    CODE_ORDERS_DAILY,
    CODE_ORDERS_HOURLY,
    DERIVED_TABLES,
    LINE_COSTS_DAILY,
    ORDER_LINES,
    ORDERS,
    ORDERS_DAILY,
    ORDERS_HOURLY,
    TABLES,
    USAGES,
    USAGES_DAILY,
    USERS_ANALYTICS,
)
from promo_libs.bus import RedisClient, redis_client
from promo_libs.clickhouse.client import ClickHouse
from promo_libs.config import load_settings
from promo_libs.events import ORDERS_STREAM, PROMO_CODES_STREAM, USERS_STREAM
from promo_libs.logging import get_logger
from sync_consumer.adapters import rebuild_gate
from sync_consumer.adapters.clickhouse_sink import ClickHouseSink
from sync_consumer.adapters.derived import refresh_statement, refresh_users_analytics
from sync_consumer.adapters.event_rows import rows_for
from sync_consumer.config import SyncConsumerSettings
from sync_consumer.domain.model import ZERO, Position, Row, StreamEntry, format_position

log = get_logger(__name__)

REBUILD, OLD = "__rebuild", "__old"


class RebuildSettings(SyncConsumerSettings):
    users_mongodb_db_name: str = "promo_users"
    promocodes_mongodb_db_name: str = "promo_promocodes"
    orders_mongodb_db_name: str = "promo_orders"
    rebuild_hold_ttl_ms: int = Field(30_000, ge=1000)
    rebuild_idle_timeout_seconds: float = Field(120.0, gt=0)


@dataclass(frozen=True, slots=True)
class Replay:
    module: str  # python -m <module> replay
    live_stream: str
    database: str


def replays(settings: RebuildSettings) -> list[Replay]:
    return [
        Replay("users_service", USERS_STREAM, settings.users_mongodb_db_name),
        Replay("promocodes_service", PROMO_CODES_STREAM, settings.promocodes_mongodb_db_name),
        Replay("orders_service", ORDERS_STREAM, settings.orders_mongodb_db_name),
    ]


@contextlib.asynccontextmanager
async def held(
    redis: Any, settings: RebuildSettings
) -> AsyncIterator[tuple[rebuild_gate.RebuildHold, list[bool]]]:
    """Holds the group's consumers; yields the hold and a flag to set once tables were swapped.

    The hold is released whatever happens (finally), and only if it is still this rebuild's.
    """
    hold = rebuild_gate.RebuildHold(redis, settings.consumer_group, settings.rebuild_hold_ttl_ms)
    swapped = [False]
    try:
        await hold.take()
        await hold.wait_idle(settings.rebuild_idle_timeout_seconds)
        yield hold, swapped
    finally:
        await hold.release(swapped=swapped[0])


async def stream_head(redis: RedisClient, stream: str) -> Position:
    try:
        info = await redis.xinfo_stream(stream)
    except aioredis.ResponseError:  # no such stream yet
        return ZERO
    last = info["last-generated-id"]
    text = last.decode() if isinstance(last, bytes) else str(last)
    ms, _, seq = text.partition("-")
    return int(ms), int(seq)


async def run_replay(replay: Replay, stream: str) -> None:
    env = {**os.environ, "MONGODB_DB_NAME": replay.database}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", replay.module, "replay", "--stream", stream, env=env
    )
    if await process.wait() != 0:
        raise RuntimeError(f"{replay.module} replay exited with {process.returncode}")


async def load_stream(
    redis: RedisClient,
    sink: ClickHouseSink,
    stream: str,
    live_stream: str,
    head: Position,
    batch_size: int,
) -> int:
    """Maps the replayed events with the live mapping into the `__rebuild` tables."""
    loaded, start = 0, "-"
    while True:
        page: list[tuple[bytes, dict[bytes, bytes]]] = (
            await redis.xrange(stream, min=start, max="+", count=batch_size) or []  # type: ignore[assignment]
        )
        rows: dict[str, list[Row]] = {}
        for entry_id, fields in page:
            # Position H of the live stream: entries up to H are in this snapshot.
            entry = StreamEntry(live_stream, format_position(head), fields)
            for table_row in rows_for(entry):
                rows.setdefault(table_row.table + REBUILD, []).append(table_row.row)
            start = "(" + entry_id.decode()
        for table, table_rows in rows.items():
            await sink.insert(table, table_rows)
        loaded += len(page)
        if len(page) < batch_size:
            return loaded


# Raw rows (orders and usages, every version) per chunk of a full recomputation: its per-order
# (per-usage) groups then stay well under the local server's 2 GB per-query cap, which one
# statement over every key exceeds at 10M rows (Code 241).
CHUNK_ROWS = 2_000_000
# Keyed by day: recomputed for chunks of days through their live scope (a batch's days).
BY_DAY = (
    ORDERS_DAILY,
    USAGES_DAILY,
    CODE_ORDERS_DAILY,
    LINE_COSTS_DAILY,
    ORDERS_HOURLY,
    CODE_ORDERS_HOURLY,
)


async def chunk_count(client: ChClient, db: str) -> int:
    """How many chunks the rebuild splits a full recomputation into."""
    rows = 0
    # order_lines too: line_costs_daily groups its lines (about three per order) per line.
    for table in (ORDERS, USAGES, ORDER_LINES):
        value = await client.fetchval(f"SELECT count() FROM {db}.{table}{REBUILD}")
        rows += int(value or 0)
    return max(1, -(-rows // CHUNK_ROWS))


async def _day_chunks(client: ChClient, db: str, chunks: int) -> list[dict[str, set[str]]]:
    """Scopes of contiguous days covering every order day and usage creation or release day,
    with every code an order named (code_orders_daily's scope is days x codes)."""
    orders, usages = f"{db}.{ORDERS}{REBUILD}", f"{db}.{USAGES}{REBUILD}"
    days = [
        str(row["d"])
        for row in await client.fetch(
            f"SELECT DISTINCT toString(day) AS d FROM (SELECT order_date AS day FROM {orders}"
            f" UNION ALL SELECT usage_date AS day FROM {usages} UNION ALL"
            f" SELECT toDate(release_time) AS day FROM {usages} WHERE status = 'RELEASED')"
            " ORDER BY d"
        )
    ]
    codes = {
        str(row["c"])
        for row in await client.fetch(
            f"SELECT DISTINCT promo_code_id AS c FROM {orders} WHERE promo_code_id != ''"
        )
    }
    size = max(1, -(-len(days) // chunks))
    return [
        {"day": set(part), "release_day": set(part), "promo_code_id": codes}
        for part in (days[i : i + size] for i in range(0, len(days), size))
    ]


async def fill_derived(client: ChClient, db: str) -> None:
    """Every derived `__rebuild` table, by the live recomputation over every key: users_analytics
    in chunks of users (see refresh_users_analytics), the daily rollups in chunks of days
    (their keys hold the day, so disjoint days write each key once and completely)."""
    chunks = await chunk_count(client, db)
    by_day = await _day_chunks(client, db, chunks) if chunks > 1 else []
    for table in DERIVED_TABLES:
        if table == USERS_ANALYTICS:
            for i in range(chunks):
                await client.execute(refresh_users_analytics(db, suffix=REBUILD, chunk=(i, chunks)))
        elif table in BY_DAY and by_day:
            for scope in by_day:
                await client.execute(refresh_statement(table, db, suffix=REBUILD, scope=scope))
        else:
            await client.execute(refresh_statement(table, db, suffix=REBUILD))


async def drop_tables(client: ChClient, db: str, suffix: str) -> None:
    for table in TABLES:
        await client.execute(f"DROP TABLE IF EXISTS {db}.{table}{suffix}")


async def swap(client: ChClient, db: str) -> None:
    pairs = []
    for table in TABLES:
        pairs += [f"{db}.{table} TO {db}.{table}{OLD}", f"{db}.{table}{REBUILD} TO {db}.{table}"]
    await client.execute("RENAME TABLE " + ", ".join(pairs))
    await drop_tables(client, db, OLD)


async def rebuild(settings: RebuildSettings) -> dict[str, int]:
    """Runs the whole rebuild; returns the number of replayed events per live stream."""
    db = settings.clickhouse_database
    clickhouse = ClickHouse(settings, timeout_seconds=300.0)
    client = clickhouse.connect()
    redis = redis_client(settings, timeout_seconds=10.0)
    run = uuid.uuid4().hex[:8]
    counts: dict[str, int] = {}
    try:
        await analytics_schema.migrate(client, db)
        sink = ClickHouseSink(client, db)
        async with held(redis, settings) as (hold, swapped):
            try:
                heads = {
                    r.live_stream: await stream_head(redis, r.live_stream)
                    for r in replays(settings)
                }
                log.info(
                    "rebuild: consumers held",
                    heads={k: format_position(v) for k, v in heads.items()},
                )
                await drop_tables(client, db, REBUILD)
                await drop_tables(client, db, OLD)
                for table in TABLES:
                    await client.execute(f"CREATE TABLE {db}.{table}{REBUILD} AS {db}.{table}")
                for replay in replays(settings):
                    stream = f"promo.rebuild.{run}.{replay.module}"
                    try:
                        await run_replay(replay, stream)
                        counts[replay.live_stream] = await load_stream(
                            redis,
                            sink,
                            stream,
                            replay.live_stream,
                            heads[replay.live_stream],
                            settings.batch_size,
                        )
                    finally:
                        await redis.delete(stream)
                await fill_derived(client, db)
                # Only a hold proven unbroken up to now may swap: had it lapsed, consumers wrote
                # into the live tables meanwhile, and those events (committed after the replays
                # read MongoDB) would be in neither table once swapped.
                await hold.confirm()
                await swap(client, db)
                swapped[0] = True
                # Confirmed again: a lapse within the swap (seconds at most) is reported, never
                # silent; a second rebuild then repairs it.
                await hold.confirm()
            except BaseException:
                if not swapped[0]:  # aborted before the swap: the live tables are untouched
                    with contextlib.suppress(Exception):
                        await drop_tables(client, db, REBUILD)
                raise
    finally:
        await redis.aclose()
        await clickhouse.close()
    return counts


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--users-db", help="the users service's database")
    parser.add_argument("--promocodes-db", help="the promo-code service's database")
    parser.add_argument("--orders-db", help="the orders service's database")


async def run(consumer: SyncConsumerSettings, args: argparse.Namespace) -> int:
    """`python -m sync_consumer rebuild`: the consumer's settings plus the rebuild's own."""
    del consumer  # RebuildSettings reads the same variables and more
    settings = load_settings(RebuildSettings)
    overrides = {
        "users_mongodb_db_name": args.users_db,
        "promocodes_mongodb_db_name": args.promocodes_db,
        "orders_mongodb_db_name": args.orders_db,
    }
    settings = settings.model_copy(update={k: v for k, v in overrides.items() if v})
    started = time.monotonic()
    counts = await rebuild(settings)
    took = time.monotonic() - started
    print(f"rebuild: swapped in {sum(counts.values())} replayed events {counts} in {took:.1f}s")
    return 0
