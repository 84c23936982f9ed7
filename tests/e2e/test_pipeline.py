"""The event pipeline end to end, every service a real process on the local stack (I3, I4, I6):
MongoDB -> outbox -> Redis streams -> sync-consumer -> ClickHouse, proven with reconcile."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio
import redis
from pipeline_support import (
    Clients,
    Load,
    LoadProcess,
    Platform,
    cancel,
    make_load,
    new_code,
    new_user,
    place,
    start_platform,
    until_reconciled,
)

from devstack.stack import Stack
from promo.v1 import orders_pb2_grpc, promo_codes_pb2_grpc, users_pb2_grpc
from promo_libs.events import ORDERS_STREAM

DRAIN_SECONDS = 180.0


@pytest.fixture(scope="module")
def platform(stack: Stack) -> Iterator[Platform]:
    running = start_platform(stack)
    try:
        yield running
    finally:
        running.stop()


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def clients(platform: Platform) -> AsyncIterator[Clients]:
    async with (
        platform.users.channel() as users,
        platform.promocodes.channel() as codes,
        platform.orders.channel() as orders,
    ):
        yield Clients(
            users_pb2_grpc.UserServiceStub(users),
            promo_codes_pb2_grpc.PromoCodeServiceStub(codes),
            orders_pb2_grpc.OrderServiceStub(orders),
        )


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def load(clients: Clients) -> Load:
    return await make_load(clients)


async def _poll(platform: Platform, sql: str, expected: list[list[str]], within: float = 30.0):
    deadline = time.monotonic() + within
    rows: list[list[str]] = []
    while time.monotonic() < deadline:
        rows = platform.query(sql)
        if rows == expected:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{sql}\n gave {rows}, not {expected}")


async def test_one_order_with_a_code_lands_denormalized_and_its_cancellation_too(
    platform: Platform, clients: Clients
) -> None:
    user = await new_user(clients)
    code = await new_code(clients)
    order_id = await place(clients, user.id, code.code, 5000)
    assert order_id is not None
    where = f"WHERE order_id = '{order_id}'"
    await _poll(
        platform,
        "SELECT status, user_id, user_email, promo_code, promo_code_id, discount_type, "
        f"subtotal_minor, discount_minor, total_minor FROM {{db}}.orders_analytics FINAL {where}",
        [
            [
                "CONFIRMED",
                user.id,
                user.email,
                code.code,
                code.id,
                "FIXED_AMOUNT",
                "5000",
                "500",
                "4500",
            ]
        ],
    )
    usage_sql = (
        "SELECT status, promo_code_id, code, user_id, user_email, discount_type, "
        "order_amount_minor, discount_minor FROM {db}.promo_code_usages_analytics FINAL "
        f"WHERE usage_id = '{order_id}'"
    )
    usage = [code.id, code.code, user.id, user.email, "FIXED_AMOUNT", "5000", "500"]
    await _poll(platform, usage_sql, [["ACTIVE", *usage]])
    summary_sql = (
        "SELECT sum(orders), sum(revenue_minor), sum(discounts_minor), sum(redemptions) "
        f"FROM {{db}}.users_analytics FINAL WHERE user_id = '{user.id}'"
    )
    await _poll(platform, summary_sql, [["1", "4500", "500", "1"]])
    rollup_sql = (
        "SELECT sum(redemptions), sum(active), sum(active_discount_minor), sum(releases) "
        f"FROM {{db}}.usages_daily FINAL WHERE promo_code_id = '{code.id}'"
    )
    await _poll(platform, rollup_sql, [["1", "1", "500", "0"]])

    await cancel(clients, order_id)
    await _poll(
        platform,
        f"SELECT status, cancellation_reason FROM {{db}}.orders_analytics FINAL {where}",
        [["CANCELLED", "changed my mind"]],
    )
    await _poll(platform, usage_sql, [["RELEASED", *usage]])
    await _poll(platform, summary_sql, [["0", "0", "0", "0"]])
    # Released after its day's rollup was computed: the rollup follows the latest state.
    await _poll(platform, rollup_sql, [["1", "0", "0", "1"]])
    await until_reconciled(platform, DRAIN_SECONDS)


async def test_consumer_killed_at_random_moments_under_load_reconciles(
    platform: Platform, load: Load
) -> None:
    rng = random.Random(11)
    work = await LoadProcess(platform, load, 1500, 16).start()
    kills = 0
    while not work.done or kills < 3:
        await asyncio.sleep(rng.uniform(0.5, 3.0))
        platform.consumer.kill()  # SIGKILL, mid-batch or between batches
        kills += 1
        await asyncio.to_thread(platform.consumer.start_and_wait)
    done = await work.wait()
    took = await until_reconciled(platform, DRAIN_SECONDS)
    print(f"\n{done} with {kills} SIGKILLs of the consumer; reconciled {took:.1f}s after")
    assert kills >= 3


async def test_clickhouse_down_for_30s_under_load_nothing_lost(
    platform: Platform, load: Load, stack: Stack
) -> None:
    if not stack.is_managed("clickhouse"):
        pytest.skip("ClickHouse comes from the environment")
    work = await LoadProcess(platform, load, 400, 8).start()
    await asyncio.sleep(1.0)
    stack.stop_server("clickhouse")
    try:
        await asyncio.sleep(30.0)
    finally:
        await asyncio.to_thread(stack.start_server, "clickhouse")
    await work.wait()
    took = await until_reconciled(platform, DRAIN_SECONDS)
    print(f"\nbacklog drained {took:.1f}s after ClickHouse returned")


async def test_redis_stopped_and_restarted_under_load_outbox_republishes(
    platform: Platform, load: Load, stack: Stack
) -> None:
    if not stack.is_managed("redis"):
        pytest.skip("Redis comes from the environment")
    work = await LoadProcess(platform, load, 400, 8).start()
    await asyncio.sleep(1.0)
    stack.stop_server("redis")
    try:
        await asyncio.sleep(8.0)  # orders keep being written; their events wait in the outbox
    finally:
        await asyncio.to_thread(stack.start_server, "redis")
    await work.wait()
    took = await until_reconciled(platform, DRAIN_SECONDS)
    print(f"\ndrained {took:.1f}s after Redis returned")


async def test_an_event_on_the_stream_twice_is_counted_once(
    platform: Platform, clients: Clients
) -> None:
    user = await new_user(clients)
    order_id = await place(clients, user.id, None, 7000)
    assert order_id is not None
    await until_reconciled(platform, DRAIN_SECONDS)
    client = redis.Redis(
        host=platform.stack.redis_host,
        port=platform.stack.redis_port,
        password=platform.stack.redis_password,
    )
    with contextlib.closing(client):
        entries = client.xrevrange(ORDERS_STREAM, count=50)
        again = [fields for _, fields in entries]  # type: ignore[union-attr]
        for fields in again:  # the same events once more, at new positions
            client.xadd(ORDERS_STREAM, fields)
    await asyncio.sleep(2.0)
    await until_reconciled(platform, DRAIN_SECONDS)
    rows = platform.query(
        "SELECT sum(orders), sum(revenue_minor) FROM {db}.users_analytics FINAL "
        f"WHERE user_id = '{user.id}'"
    )
    assert rows == [["1", "7000"]]


def _run_tool(platform: Platform, module: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **platform.tool_env()}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


async def test_rebuild_from_mongodb_under_live_load_reconciles(
    platform: Platform, load: Load
) -> None:
    # Damage the analytics first: only a rebuild from MongoDB can repair this.
    platform.query(
        "INSERT INTO {db}.users_analytics (user_id, day, currency_code, orders, revenue_minor, "
        "discounts_minor, redemptions) VALUES ('ghost', today(), 'EUR', 1, 100, 0, 0)"
    )
    assert _run_tool(platform, "promo_reconcile").returncode == 1
    work = await LoadProcess(platform, load, 300, 4).start()  # live events during the rebuild
    await asyncio.sleep(0.5)
    rebuilt = await asyncio.to_thread(_run_tool, platform, "sync_consumer", "rebuild")
    assert rebuilt.returncode == 0, rebuilt.stderr[-3000:]
    await work.wait()
    took = await until_reconciled(platform, DRAIN_SECONDS)
    print(f"\n{rebuilt.stdout.strip()}; reconciled {took:.1f}s after the load")
    checked = _run_tool(platform, "promo_reconcile")
    assert checked.returncode == 0, checked.stdout
    tables = platform.query("SELECT name FROM system.tables WHERE database = '{db}' ORDER BY name")
    assert not [t for t in tables if t[0].endswith(("__rebuild", "__old"))]


async def test_redis_failing_during_the_rebuild_hold_aborts_it_and_nothing_is_lost(
    platform: Platform, load: Load
) -> None:
    """The hold lapses while Redis is down (longer than its TTL): the rebuild must not swap
    (consumers may have resumed into the live tables), must drop what it built, and every
    event must still land exactly once; a second rebuild then succeeds."""
    if not platform.stack.is_managed("redis"):
        pytest.skip("Redis comes from the environment")
    ttl_ms = 2000
    env = {**os.environ, **platform.tool_env(), "REBUILD_HOLD_TTL_MS": str(ttl_ms)}
    probe = redis.Redis(
        host=platform.stack.redis_host,
        port=platform.stack.redis_port,
        password=platform.stack.redis_password,
    )
    hold = f"promo:sync:{{{platform.consumer_env['CONSUMER_GROUP']}}}:hold"
    work = await LoadProcess(platform, load, 300, 4).start()
    rebuild = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sync_consumer",
        "rebuild",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while not probe.exists(hold):
        assert time.monotonic() < deadline, "the rebuild never took its hold"
        await asyncio.sleep(0.02)
    probe.close()
    await asyncio.to_thread(platform.stack.kill_server, "redis")
    await asyncio.sleep(1.5 * ttl_ms / 1000)  # the fault's length, longer than the TTL
    await asyncio.to_thread(platform.stack.start_server, "redis")
    out, err = await asyncio.wait_for(rebuild.communicate(), 300)
    assert rebuild.returncode != 0, out.decode()
    await work.wait()
    took = await until_reconciled(platform, DRAIN_SECONDS)
    print(f"\nrebuild aborted: {err.decode().strip().splitlines()[-1]}; reconciled in {took:.1f}s")
    tables = platform.query("SELECT name FROM system.tables WHERE database = '{db}' ORDER BY name")
    assert not [t for t in tables if t[0].endswith(("__rebuild", "__old"))]
    again = await asyncio.to_thread(_run_tool, platform, "sync_consumer", "rebuild")
    assert again.returncode == 0, again.stderr[-3000:]
    await until_reconciled(platform, DRAIN_SECONDS)
