"""The pipeline's speed: stream -> ClickHouse throughput beside its ceiling, and end-to-end lag.

    .venv/bin/python services/sync-consumer/benchmarks/pipeline_bench.py \
        --events 20000 --batch-size 5000 --rate 40 --seconds 20

1. Throughput: a `python -m sync_consumer` process reads a stream of its own; `--events`
   synthetic order events are appended at once, and the clock runs until the last row is
   visible. Ceiling: the same rows (the consumer's own mapping) inserted straight with aiochclient
   in batches of the same size into the same tables (no derived table: a raw insert) of another
   database on the same server. The consumer's clock stops when users_analytics (recomputed
   after each batch's event rows) holds every order. Prints events/s of both and their ratio.
2. Lag: users, promocodes, orders and sync-consumer as processes; orders with a code placed at
   `--rate` per second for `--seconds`; for each, the time from CreateOrder's answer (the order
   is committed) to its CONFIRMED row being visible in orders_analytics (polled every 20 ms).
   Prints p50/p99.
3. Stream lag (`--stream-rate`, events/s): a `python -m sync_consumer` process with the
   production batching settings reads a stream of its own; OrderConfirmed events are XADDed
   straight into it at that rate (in 10 ms ticks) for `--seconds`; for each, the time from
   XADD's answer to its row being visible (polled every 20 ms). Prints p50/p99. The local
   MongoDB stand-in cannot take 500 orders/s through the services; this isolates the bus and
   the consumer.
`--only throughput|lag|stream-lag` runs one part.

Uses the servers of MONGODB_URI / REDIS_HOST / CLICKHOUSE_HOST when set (`eval $(python -m
devstack env)`), otherwise starts its own stack. A benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import grpc
import redis.asyncio as aioredis

from devstack.ports import free_port
from devstack.service import ServiceProcess
from devstack.stack import Stack
from promo.v1 import (
    common_pb2,
    orders_pb2,
    orders_pb2_grpc,
    promo_codes_pb2,
    promo_codes_pb2_grpc,
    users_pb2,
    users_pb2_grpc,
)
from promo_libs import analytics_schema
from promo_libs.analytics_schema import ORDERS, USERS_ANALYTICS
from promo_libs.bus import ENVELOPE_FIELD, EVENT_ID_FIELD, TYPE_FIELD
from promo_libs.clickhouse.client import ClickHouse
from promo_libs.events import ORDERS_STREAM, PROMO_CODES_STREAM, USERS_STREAM
from sync_consumer.adapters.event_rows import rows_for
from sync_consumer.domain.model import StreamEntry
from sync_consumer_testing import synthetic

COMMON = {"METRICS_PORT": "0", "HEALTH_CHECK_INTERVAL_SECONDS": "0.2", "LOG_LEVEL": "WARNING"}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def clickhouse(stack: Stack, database: str) -> ClickHouse:
    return ClickHouse(stack.clickhouse_settings(database))


async def migrated(stack: Stack, database: str) -> None:
    """The analytics schema in `database` before a consumer starts: the consumer only checks it
    (the migrations Job applies it), and the stack runs the migrator only for a ClickHouse it
    started itself, not for the one `devstack env` points at."""
    ch = clickhouse(stack, database)
    ch.connect()
    try:
        await analytics_schema.migrate(ch.client, database)
    finally:
        await ch.close()


async def count_rows(ch: ClickHouse, table: str) -> int:
    return int(await ch.client.fetchval(f"SELECT count() FROM {ch.database}.{table}") or 0)


async def confirmed_in_summary(ch: ClickHouse) -> int:
    value = await ch.client.fetchval(
        f"SELECT sum(orders) FROM {ch.database}.{USERS_ANALYTICS} FINAL"
    )
    return int(value or 0)


async def throughput(stack: Stack, events: int, batch_size: int) -> None:
    token = uuid.uuid4().hex[:8]
    stream, database = f"promo.events.bench-{token}.orders", f"bench_{token}"
    await migrated(stack, database)
    consumer = stack.service(
        "sync-consumer-bench",
        [sys.executable, "-m", "sync_consumer"],
        free_port(),
        {
            **COMMON,
            "CLICKHOUSE_DATABASE": database,
            "STREAMS": stream,
            "CONSUMER_GROUP": f"bench-{token}",
            "BATCH_SIZE": str(batch_size),
            "BATCH_WAIT_MS": "200",
        },
    )
    consumer.start_and_wait()
    at = datetime.now(UTC)
    messages = [
        synthetic.order_event(
            "confirmed",
            f"b{token}{n}",
            f"u{n % 500}",
            at,
            subtotal=1000 + n,
            discount=100,
            code_id="p1",
            version=2,
        )
        for n in range(events)
    ]
    redis = aioredis.Redis(
        host=stack.redis_host, port=stack.redis_port, password=stack.redis_password
    )
    ch = clickhouse(stack, database)
    ch.connect()
    try:
        started = time.perf_counter()
        pipe = redis.pipeline(transaction=False)
        for message in messages:
            pipe.xadd(
                stream,
                {
                    EVENT_ID_FIELD: message.event_id,
                    TYPE_FIELD: message.type,
                    ENVELOPE_FIELD: message.SerializeToString(),
                },
            )
        ids = await pipe.execute()
        give_up = time.monotonic() + 300
        # Done when the derived table too holds every order (it is recomputed after the
        # event rows of each batch are stored).
        while await confirmed_in_summary(ch) < events:
            if time.monotonic() > give_up:
                raise TimeoutError(consumer.log_tail())
            await asyncio.sleep(0.02)
        pipeline_seconds = time.perf_counter() - started

        # The ceiling: the same rows, straight into the same tables of another database.
        ceiling_db = f"bench_{token}_ceiling"
        await analytics_schema.migrate(ch.client, ceiling_db)
        rows = [
            rows_for(
                StreamEntry(stream, entry_id.decode(), {ENVELOPE_FIELD: m.SerializeToString()})
            )[0].row
            for entry_id, m in zip(ids, messages, strict=True)
        ]
        started = time.perf_counter()
        for first in range(0, len(rows), batch_size):
            await ch.client.execute(
                f"INSERT INTO {ceiling_db}.{ORDERS} FORMAT JSONEachRow",
                *rows[first : first + batch_size],
                json=True,
            )
        ceiling_seconds = time.perf_counter() - started
        for db in (database, ceiling_db):
            await ch.client.execute(f"DROP DATABASE IF EXISTS {db}")
    finally:
        consumer.terminate()
        await redis.delete(stream)
        await redis.aclose()
        await ch.close()
    pipeline_rate, ceiling_rate = events / pipeline_seconds, events / ceiling_seconds
    print(f"throughput, {events} events, batch size {batch_size}:")
    print(f"  stream -> ClickHouse (sync-consumer): {pipeline_rate:9.0f} events/s")
    print(f"  ceiling (raw aiochclient inserts):     {ceiling_rate:9.0f} events/s")
    print(f"  ratio:                                 {pipeline_rate / ceiling_rate:9.2f}")


def platform(stack: Stack, token: str, database: str) -> list[ServiceProcess]:
    users = stack.service(
        "users-bench",
        [sys.executable, "-m", "users_service"],
        free_port(),
        {
            **COMMON,
            "MONGODB_DB_NAME": f"bench_u_{token}",
            "ARGON2_MEMORY_KIB": "8192",
            "ARGON2_TIME_COST": "1",
            "ARGON2_PARALLELISM": "1",
        },
    )
    codes = stack.service(
        "promocodes-bench",
        [sys.executable, "-m", "promocodes_service"],
        free_port(),
        {**COMMON, "MONGODB_DB_NAME": f"bench_p_{token}", "USERS_ADDR": users.address},
    )
    orders = stack.service(
        "orders-bench",
        [sys.executable, "-m", "orders_service"],
        free_port(),
        {
            **COMMON,
            "MONGODB_DB_NAME": f"bench_o_{token}",
            "USERS_ADDR": users.address,
            "PROMOCODES_ADDR": codes.address,
        },
    )
    consumer = stack.service(
        "sync-consumer-bench",
        [sys.executable, "-m", "sync_consumer"],
        free_port(),
        {
            **COMMON,
            "CLICKHOUSE_DATABASE": database,
            "CONSUMER_GROUP": f"bench-{token}",
            "STREAMS": f"{USERS_STREAM},{PROMO_CODES_STREAM},{ORDERS_STREAM}",
        },
    )
    for service in (users, codes, orders, consumer):
        service.start_and_wait()
    return [users, codes, orders, consumer]


async def lag(stack: Stack, rate: float, seconds: float) -> None:
    token = uuid.uuid4().hex[:8]
    database = f"bench_lag_{token}"
    await migrated(stack, database)
    processes = platform(stack, token, database)
    users, codes, orders = processes[0], processes[1], processes[2]
    ch = clickhouse(stack, database)
    ch.connect()
    committed: dict[str, float] = {}
    visible: dict[str, float] = {}
    retried = [0]
    committed_wall: dict[str, float] = {}
    added: dict[str, float] = {}
    try:
        async with (
            users.channel() as u,
            codes.channel() as c,
            orders.channel() as o,
        ):
            user_stub = users_pb2_grpc.UserServiceStub(u)
            order_stub = orders_pb2_grpc.OrderServiceStub(o)
            user = await user_stub.CreateUser(
                users_pb2.CreateUserRequest(
                    user=users_pb2.User(email=f"bench.{token}@example.com", display_name="B"),
                    password="benchmark password 1",
                )
            )
            eur = common_pb2.Money(currency_code="EUR", amount_minor=300)
            code = await promo_codes_pb2_grpc.PromoCodeServiceStub(c).CreatePromoCode(
                promo_codes_pb2.CreatePromoCodeRequest(
                    promo_code=promo_codes_pb2.PromoCode(
                        code=f"BENCH{token.upper()}", fixed_amount=eur
                    )
                )
            )

            async def place() -> None:
                request = orders_pb2.CreateOrderRequest(
                    user_id=user.id,
                    promo_code=code.code,
                    idempotency_key=uuid.uuid4().hex,
                    amount=common_pb2.Money(currency_code="EUR", amount_minor=5000),
                )
                for _ in range(20):  # as the error says: retried with the same key
                    try:
                        order = await order_stub.CreateOrder(request)
                        break
                    except grpc.aio.AioRpcError as exc:
                        if exc.code() != grpc.StatusCode.UNAVAILABLE:
                            raise
                        retried[0] += 1
                else:
                    return
                committed[order.id] = time.perf_counter()
                committed_wall[order.id] = time.time()

            watcher = asyncio.create_task(
                watch_visible(
                    ch,
                    f"SELECT order_id, src_ms FROM {database}.{ORDERS} "
                    "WHERE status = 'CONFIRMED' AND",
                    committed,
                    visible,
                    added,
                )
            )
            tasks = []
            for _ in range(int(rate * seconds)):
                tasks.append(asyncio.create_task(place()))
                await asyncio.sleep(1 / rate)
            await asyncio.gather(*tasks)
            deadline = time.monotonic() + 60
            while len(visible) < len(committed) and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
            watcher.cancel()
        lags = [visible[i] - committed[i] for i in visible]
        print(
            f"end-to-end lag at {rate:.0f} orders/s for {seconds:.0f}s ({len(lags)} orders, "
            f"{len(committed) - len(lags)} not visible within 60 s after the load, "
            f"{retried[0]} CreateOrder calls retried after UNAVAILABLE):"
        )
        print(
            f"  order commit -> row visible: p50 {statistics.median(lags) * 1000:6.0f} ms, "
            f"p99 {percentile(lags, 0.99) * 1000:6.0f} ms"
        )
        # Where the time goes: commit -> XADD (the service's publish, or its relay) and
        # XADD -> visible (the consumer), by the stream entry's own timestamp (same host).
        to_bus = [added[i] - committed_wall[i] for i in visible if i in added]
        to_row = [
            (committed_wall[i] + visible[i] - committed[i]) - added[i]
            for i in visible
            if i in added
        ]
        for name, values in (("commit -> XADD", to_bus), ("XADD -> row visible", to_row)):
            print(
                f"  {name:27}: p50 {statistics.median(values) * 1000:6.0f} ms, "
                f"p99 {percentile(values, 0.99) * 1000:6.0f} ms"
            )
        await ch.client.execute(f"DROP DATABASE IF EXISTS {database}")
    finally:
        await ch.close()
        for process in reversed(processes):
            process.terminate()


async def watch_visible(
    ch: ClickHouse,
    select: str,
    since: dict[str, float],
    visible: dict[str, float],
    added: dict[str, float] | None = None,
) -> None:
    """Every 20 ms: which of the ids in `since` have a row now (`select ... WHERE` + id list);
    `added` gets each row's XADD time (its src_ms, wall clock) to split the lag in two."""
    while True:
        waiting = [i for i in since if i not in visible]
        if waiting:
            listed = ",".join(f"'{i}'" for i in waiting)
            rows = await ch.client.fetch(f"{select} order_id IN ({listed})")
            now = time.perf_counter()
            for row in rows:
                visible.setdefault(row["order_id"], now)
                if added is not None:
                    added.setdefault(row["order_id"], int(row["src_ms"]) / 1000)
        await asyncio.sleep(0.02)


async def stream_lag(stack: Stack, rate: float, seconds: float) -> None:
    token = uuid.uuid4().hex[:8]
    stream, database = f"promo.events.bench-{token}.orders", f"bench_slag_{token}"
    await migrated(stack, database)
    consumer = stack.service(
        "sync-consumer-bench",
        [sys.executable, "-m", "sync_consumer"],
        free_port(),
        {
            **COMMON,
            "CLICKHOUSE_DATABASE": database,
            "STREAMS": stream,
            "CONSUMER_GROUP": f"bench-{token}",
        },
    )
    consumer.start_and_wait()
    redis = aioredis.Redis(
        host=stack.redis_host, port=stack.redis_port, password=stack.redis_password
    )
    ch = clickhouse(stack, database)
    ch.connect()
    published: dict[str, float] = {}
    visible: dict[str, float] = {}
    at = datetime.now(UTC)
    try:

        async def publish(first: int, last: int) -> None:
            """One tick's events in one round trip (a relay publishes in such bursts too)."""
            pipe = redis.pipeline(transaction=False)
            for k in range(first, last):
                message = synthetic.order_event(
                    "confirmed", f"s{token}{k}", f"u{k % 500}", at, subtotal=1000 + k, version=2
                )
                pipe.xadd(
                    stream,
                    {
                        EVENT_ID_FIELD: message.event_id,
                        TYPE_FIELD: message.type,
                        ENVELOPE_FIELD: message.SerializeToString(),
                    },
                )
            await pipe.execute()
            now = time.perf_counter()
            for k in range(first, last):
                published[f"s{token}{k}"] = now

        watcher = asyncio.create_task(
            watch_visible(ch, f"SELECT order_id FROM {database}.{ORDERS} WHERE", published, visible)
        )
        total, tick = int(rate * seconds), 0.01
        started = time.perf_counter()
        n = 0
        while n < total:
            due = min(total, int(rate * (time.perf_counter() - started + tick)))
            if due > n:
                await publish(n, due)
                n = due
            await asyncio.sleep(tick)
        deadline = time.monotonic() + 60
        while len(visible) < len(published) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        watcher.cancel()
        lags = [visible[i] - published[i] for i in visible]
        print(
            f"stream lag at {rate:.0f} events/s for {seconds:.0f}s ({len(lags)} events, "
            f"{len(published) - len(lags)} not visible within 60 s after the load):"
        )
        print(
            f"  XADD -> row visible: p50 {statistics.median(lags) * 1000:6.0f} ms, "
            f"p99 {percentile(lags, 0.99) * 1000:6.0f} ms"
        )
        await ch.client.execute(f"DROP DATABASE IF EXISTS {database}")
    finally:
        consumer.terminate()
        await redis.delete(stream)
        await redis.aclose()
        await ch.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--rate", type=float, default=40.0, help="orders per second")
    parser.add_argument("--seconds", type=float, default=20.0, help="0: no lag measurement")
    parser.add_argument("--stream-rate", type=float, default=500.0, help="events per second")
    parser.add_argument("--only", choices=["throughput", "lag", "stream-lag"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pipeline-bench-") as state:
        stack = Stack.from_environ(Path(state))
        stack.start()
        try:
            if args.only in (None, "throughput"):
                asyncio.run(throughput(stack, args.events, args.batch_size))
            if args.seconds > 0 and args.only in (None, "lag"):
                asyncio.run(lag(stack, args.rate, args.seconds))
            if args.seconds > 0 and args.only in (None, "stream-lag"):
                asyncio.run(stream_lag(stack, args.stream_rate, args.seconds))
        finally:
            stack.stop()


if __name__ == "__main__":
    main()
