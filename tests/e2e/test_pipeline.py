"""The event pipeline end to end, every service a real process on the local stack (I3, I4, I6):
MongoDB -> outbox -> Redis streams -> sync-consumer -> ClickHouse, proven with reconcile."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, NamedTuple

import pytest
import pytest_asyncio
import redis
from pipeline_support import (
    COMMON,
    Campaigns,
    Clients,
    Load,
    LoadProcess,
    Platform,
    cancel,
    cart,
    make_load,
    new_code,
    new_user,
    place,
    until_reconciled,
)

from devstack.ports import free_port
from devstack.service import ServiceProcess
from devstack.stack import Stack
from promo.v1 import (
    analytics_pb2,
    analytics_pb2_grpc,
    common_pb2,
)
from promo_libs.events import ORDERS_STREAM
from promo_libs.grpc.mapping import timestamp
from promo_reconcile import reconcile

DRAIN_SECONDS = 180.0


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
    # The merge ClickHouse runs in the background when it likes, now: it keeps only each
    # line's latest version (a PENDING one without a campaign is gone once its order has a
    # campaign). One more cart without a code, the same day: its keys recomputed after it.
    platform.query("OPTIMIZE TABLE {db}.order_lines FINAL")
    assert await place(load.clients, load.users[0], None, 0, cart(random.Random(3))) is not None
    await until_reconciled(platform, DRAIN_SECONDS)


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


@contextlib.contextmanager
def _analytics(platform: Platform) -> Iterator[ServiceProcess]:
    """AnalyticsService on the consumer's ClickHouse database, for as long as a test needs it."""
    service = platform.stack.service(
        "analytics-pipe",
        [sys.executable, "-m", "analytics_service"],
        free_port(),
        {**COMMON, "CLICKHOUSE_DATABASE": platform.clickhouse_db},
    )
    service.start_and_wait()
    try:
        yield service
    finally:
        service.terminate()


class CampaignAnswers(NamedTuple):
    settled: analytics_pb2.CampaignStats
    live: analytics_pb2.CampaignStats
    costs: list[analytics_pb2.ListDiscountCostsResponse]


async def _campaign_answers(
    analytics: ServiceProcess, campaigns: Campaigns, until: datetime
) -> CampaignAnswers:
    """What AnalyticsService says of the settled campaign (all time: nothing the live load does
    touches it), of the live one and of the discount costs by product and by category (all
    campaigns, the settled one), over everything before `until` (the live load's orders and
    usages are later; it cancels only its own orders)."""
    before = common_pb2.TimeRange(end_time=timestamp(until))
    async with analytics.channel() as channel:
        stub = analytics_pb2_grpc.AnalyticsServiceStub(channel)
        settled = await stub.GetCampaignStats(
            analytics_pb2.GetCampaignStatsRequest(campaign_id=campaigns.settled), timeout=30
        )
        live = await stub.GetCampaignStats(
            analytics_pb2.GetCampaignStatsRequest(campaign_id=campaigns.live, time_range=before),
            timeout=30,
        )
        costs = []
        for group_by in (
            analytics_pb2.DISCOUNT_COST_GROUPING_PRODUCT,
            analytics_pb2.DISCOUNT_COST_GROUPING_CATEGORY,
        ):
            for campaign in ("", campaigns.settled):
                request = analytics_pb2.ListDiscountCostsRequest(
                    time_range=before, group_by=group_by, limit=1000, campaign_id=campaign
                )
                costs.append(await stub.ListDiscountCosts(request, timeout=30))
    return CampaignAnswers(settled, live, costs)


async def _until_held(platform: Platform, rebuilding: asyncio.Future[Any]) -> None:
    """Until the rebuild holds the consumers (its hold key exists); it must not end first."""
    probe = redis.Redis(
        host=platform.stack.redis_host,
        port=platform.stack.redis_port,
        password=platform.stack.redis_password,
    )
    hold = f"promo:sync:{{{platform.consumer_env['CONSUMER_GROUP']}}}:hold"
    deadline = time.monotonic() + 120
    with contextlib.closing(probe):
        while not probe.exists(hold):
            assert not rebuilding.done(), "the rebuild ended before it was seen holding"
            assert time.monotonic() < deadline, "the rebuild never took its hold"
            await asyncio.sleep(0.05)


async def test_rebuild_from_mongodb_under_live_load_reconciles(
    platform: Platform, load: Load
) -> None:
    """The rebuild from every service's replay, under live load, on a history with campaigns (one
    updated, codes generated into one and made by hand), carts of several lines and categories,
    rejections, releases and cancellations: every fact reconciles to zero, the new ones
    included, and the campaign and discount-cost answers of the history before the live load
    are the same after the rebuild as before it."""
    campaigns = load.campaigns
    assert campaigns is not None
    started = time.monotonic()
    settled = await (await LoadProcess(platform, load, 120, 12).start()).wait()
    drained = await until_reconciled(platform, DRAIN_SECONDS)
    history = time.monotonic() - started
    # Event times are stored to the second: the live load starts in the second after `until`.
    until = datetime.fromtimestamp(int(time.time()) + 1, UTC)
    with _analytics(platform) as analytics:
        answers = await _campaign_answers(analytics, campaigns, until)
        assert answers.settled.redemptions and answers.settled.releases
        assert answers.settled.codes == 3 and answers.settled.HasField("remaining_uses")
        assert answers.live.redemptions and answers.live.display_name.endswith("(2)")
        assert all(cost.entries for cost in answers.costs)
        # Not a synchronisation: nothing to wait for but the clock reaching `until`.
        await asyncio.sleep(max(0.0, until.timestamp() - time.time()))

        # Damage the analytics first: only a rebuild from MongoDB can repair this. A line
        # naming a campaign its order does not have, a user summary of no user.
        ((line_id, order_id, index),) = platform.query(
            "SELECT line_id, order_id, toString(line_index) FROM {db}.order_lines FINAL"
            " WHERE campaign_id != '' ORDER BY line_id LIMIT 1"
        )
        kept = (
            "order_id, line_index, order_date, sku, product_id, category_ids, quantity,"
            " unit_price_minor, discount_minor, currency_code, user_id, promo_code_id, status,"
            " create_time"
        )
        platform.query(
            f"INSERT INTO {{db}}.order_lines (line_id, version, campaign_id, {kept})"
            f" SELECT line_id, version + 10, 'camp-wrong', {kept} FROM {{db}}.order_lines FINAL"
            f" WHERE line_id = '{line_id}'"
        )
        platform.query(
            "INSERT INTO {db}.users_analytics (user_id, day, currency_code, orders,"
            " revenue_minor, discounts_minor, redemptions)"
            " VALUES ('ghost', today(), 'EUR', 1, 100, 0, 0)"
        )
        found, _ = await reconcile(platform.reconcile_settings())
        (wrong,) = [d for d in found if d.fact == "order_lines"]
        assert wrong.key == (order_id, int(index)) and wrong.truth and wrong.analytics
        assert wrong.analytics[1] == "camp-wrong" != wrong.truth[1]
        assert wrong.analytics[:1] + wrong.analytics[2:] == wrong.truth[:1] + wrong.truth[2:]
        assert {d.fact for d in found} - {"order_lines"} <= {"users_analytics"}, found
        assert platform.run_tool("promo_reconcile").returncode == 1

        # Live events during the rebuild, none of the settled campaign: the load starts once the
        # rebuild holds the consumers, so its events wait in Redis while the replays read
        # MongoDB (some are in both) and land in the swapped tables after it.
        rebuilding = asyncio.create_task(
            asyncio.to_thread(platform.run_tool, "sync_consumer", "rebuild")
        )
        await _until_held(platform, rebuilding)
        work = await LoadProcess(platform, load, 300, 4, campaigns.settled_codes).start()
        rebuilt = await rebuilding
        assert rebuilt.returncode == 0, rebuilt.stderr[-3000:]
        during = await work.wait()
        took = await until_reconciled(platform, DRAIN_SECONDS)
        print(
            f"\nsettled history {settled} in {history:.1f}s (drained in {drained:.1f}s);"
            f" live load {during};"
            f" {rebuilt.stdout.strip()}; reconciled {took:.1f}s after the load"
        )
        checked = platform.run_tool("promo_reconcile")
        assert checked.returncode == 0, checked.stdout
        _, sizes = await reconcile(platform.reconcile_settings())
        for fact in (
            "campaigns",
            "campaign codes",
            "usages by campaign",
            "orders by campaign",
            "order_lines",
        ):
            assert sizes[fact] > 0, (fact, sizes)
        # Equal to MongoDB now: carts of several lines, lines in two categories and in none.
        ((last_index, in_two, in_none),) = platform.query(
            "SELECT max(line_index), countIf(length(category_ids) = 2),"
            " countIf(length(category_ids) = 0) FROM {db}.order_lines FINAL"
        )
        assert int(last_index) >= 1 and int(in_two) > 0 and int(in_none) > 0
        assert await _campaign_answers(analytics, campaigns, until) == answers
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
    again = await asyncio.to_thread(platform.run_tool, "sync_consumer", "rebuild")
    assert again.returncode == 0, again.stderr[-3000:]
    await until_reconciled(platform, DRAIN_SECONDS)
