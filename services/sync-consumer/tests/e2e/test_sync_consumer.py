"""sync-consumer as a process, between the real Redis and ClickHouse 18.16 of the local stack.

Each test has its own database and streams, so tests never see each other's rows.
"""

import asyncio
import contextlib
import random
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis

from devstack.probes import clickhouse_query
from devstack.service import ServiceProcess
from devstack.stack import Stack
from promo.v1 import events_pb2
from promo_libs.bus import ENVELOPE_FIELD, EVENT_ID_FIELD, TYPE_FIELD
from promo_libs.clickhouse.client import ClickHouse
from promo_libs.config import ClickHouseSettings
from sync_consumer import synthetic
from sync_consumer.reconcile import Difference, Facts, analytics_facts, differences, truth_facts

AT = datetime(2024, 1, 31, 23, 0, tzinfo=UTC)


class Harness:
    def __init__(self, stack: Stack, start_service: Callable[..., ServiceProcess]) -> None:
        token = uuid.uuid4().hex[:10]
        self.stack = stack
        self.database = f"e2e_{token}"
        self.users = f"t{token}.users"
        self.codes = f"t{token}.promo_codes"
        self.orders = f"t{token}.orders"
        self.redis = redis.Redis(host=stack.redis_host, port=stack.redis_port)
        self._start_service = start_service
        self.env = {
            "CLICKHOUSE_DATABASE": self.database,
            "STREAMS": f"{self.users},{self.codes},{self.orders}",
            "CONSUMER_NAME": "sync-1",
            "BATCH_SIZE": "300",
            "BATCH_WAIT_MS": "100",
            "CLAIM_IDLE_MS": "1000",
            "MAX_DELIVERIES": "3",
            "HEALTH_CHECK_INTERVAL_SECONDS": "0.2",
        }

    def start(self) -> ServiceProcess:
        return self._start_service(
            "sync-consumer", [sys.executable, "-m", "sync_consumer"], extra_env=self.env
        )

    def publish(self, stream: str, message: Any, event_id: str | None = None) -> str:
        fields = {
            EVENT_ID_FIELD: event_id or message.event_id,
            TYPE_FIELD: message.type,
            ENVELOPE_FIELD: message.SerializeToString(),
        }
        return self.redis.xadd(stream, fields).decode()  # type: ignore[union-attr]

    def query(self, sql: str) -> list[list[str]]:
        text = clickhouse_query(
            self.stack.clickhouse_host, self.stack.clickhouse_port, sql.format(db=self.database)
        )
        return [line.split("\t") for line in text.splitlines()]

    def scalar(self, sql: str) -> str:
        return self.query(sql)[0][0]

    def wait_for(self, sql: str, expected: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        value = None
        while time.monotonic() < deadline:
            try:
                value = self.scalar(sql)
            except Exception as exc:  # ClickHouse restarting, table not there yet
                value = repr(exc)
            if value == expected:
                return
            time.sleep(0.1)
        raise AssertionError(f"{sql} is {value}, not {expected} after {timeout}s")

    def close(self) -> None:
        self.redis.delete(self.users, self.codes, self.orders, f"{self.orders}.dead-letter")
        self.redis.close()
        with contextlib.suppress(Exception):
            clickhouse_query(
                self.stack.clickhouse_host,
                self.stack.clickhouse_port,
                f"DROP DATABASE IF EXISTS {self.database}",
            )


@pytest.fixture
def harness(stack: Stack, start_service: Callable[..., ServiceProcess]) -> Iterator[Harness]:
    h = Harness(stack, start_service)
    yield h
    h.close()


def order_flow(h: Harness, n: int, user: str, *, cancel: bool) -> tuple[int, int]:
    """Publishes one order's events; returns its (orders, revenue) contribution."""
    order_id = f"o{n}"
    at = AT + timedelta(minutes=n)
    h.publish(
        h.orders, synthetic.order_event("created", order_id, user, at, subtotal=1000 + n, version=1)
    )
    h.publish(
        h.orders,
        synthetic.order_event(
            "confirmed",
            order_id,
            user,
            at,
            subtotal=1000 + n,
            discount=100,
            code_id="p1",
            version=2,
        ),
    )
    h.publish(
        h.codes,
        synthetic.usage_event(
            "redeemed", order_id, "p1", user, at, amount=1000 + n, discount=100, version=1
        ),
    )
    if cancel:
        h.publish(
            h.orders,
            synthetic.order_event(
                "cancelled",
                order_id,
                user,
                at,
                subtotal=1000 + n,
                discount=100,
                code_id="p1",
                version=3,
            ),
        )
        h.publish(
            h.codes,
            synthetic.usage_event(
                "released", order_id, "p1", user, at, amount=1000 + n, discount=100, version=2
            ),
        )
        return 0, 0
    return 1, 900 + n


TOTALS = (
    "SELECT concat(toString(sum(orders)), '/', toString(sum(revenue_minor)), '/',"
    " toString(sum(redemptions))) FROM {db}.users_analytics FINAL"
)


def test_events_land_denormalized_and_cancellation_is_reflected(harness: Harness) -> None:
    h = harness
    h.start()
    h.publish(h.users, synthetic.user_created("u1", AT))
    order_flow(h, 1, "u1", cancel=False)
    order_flow(h, 2, "u1", cancel=True)
    h.wait_for("SELECT count() FROM {db}.orders_analytics FINAL", "2")
    h.wait_for(TOTALS, "1/901/1")
    rows = h.query(
        "SELECT order_id, status, total_minor, discount_minor, promo_code, discount_type,"
        " user_email, order_date, toString(create_time)"
        " FROM {db}.orders_analytics FINAL ORDER BY order_id"
    )
    assert rows == [
        [
            "o1",
            "CONFIRMED",
            "901",
            "100",
            "CODE-P1",
            "PERCENTAGE",
            "u1@example.com",
            "2024-01-31",
            "2024-01-31 23:01:00",
        ],
        [
            "o2",
            "CANCELLED",
            "902",
            "100",
            "CODE-P1",
            "PERCENTAGE",
            "u1@example.com",
            "2024-01-31",
            "2024-01-31 23:02:00",
        ],
    ]
    # Usages come from another stream (its own ordered consumer): wait for them too.
    h.wait_for(
        "SELECT concat(toString(count()), '/', toString(countIf(status = 'RELEASED')))"
        " FROM {db}.promo_code_usages_analytics FINAL",
        "2/1",
    )
    usages = h.query(
        "SELECT usage_id, status, code, discount_minor"
        " FROM {db}.promo_code_usages_analytics FINAL ORDER BY usage_id"
    )
    assert usages == [["o1", "ACTIVE", "CODE-P1", "100"], ["o2", "RELEASED", "CODE-P1", "100"]]
    h.wait_for("SELECT email FROM {db}.users FINAL WHERE user_id = 'u1'", "u1@example.com")
    per_day = h.query(
        "SELECT user_id, day, sum(orders), sum(revenue_minor), sum(discounts_minor),"
        " sum(redemptions) FROM {db}.users_analytics FINAL GROUP BY user_id, day"
    )
    assert per_day == [["u1", "2024-01-31", "1", "901", "100", "1"]]


def test_same_event_delivered_twice_is_counted_once(harness: Harness) -> None:
    h = harness
    service = h.start()
    expected = [order_flow(h, n, "u1", cancel=n % 3 == 0) for n in range(30)]
    want = (
        f"{sum(o for o, _ in expected)}/{sum(r for _, r in expected)}/{sum(o for o, _ in expected)}"
    )
    h.wait_for(TOTALS, want)
    # Every entry delivered again, to a running consumer and to a restarted one.
    h.redis.xgroup_setid(h.orders, "sync-consumer", "0")
    h.redis.xgroup_setid(h.codes, "sync-consumer", "0")
    order_flow(h, 100, "u2", cancel=False)
    h.wait_for("SELECT count() FROM {db}.orders_analytics FINAL", "31")
    service.restart()
    h.redis.xgroup_setid(h.orders, "sync-consumer", "0")
    order_flow(h, 101, "u2", cancel=False)
    h.wait_for("SELECT count() FROM {db}.orders_analytics FINAL", "32")
    orders, revenue = sum(o for o, _ in expected) + 2, sum(r for _, r in expected) + 1000 + 1001
    h.wait_for(TOTALS, f"{orders}/{revenue}/{orders}")
    assert h.scalar("SELECT count() - uniqExact(event_id) FROM {db}.orders_analytics") == "0"


def test_killed_mid_stream_several_times_nothing_lost_nothing_twice(harness: Harness) -> None:
    h = harness
    service = h.start()
    expected: list[tuple[int, int]] = []
    for round_ in range(4):
        for n in range(round_ * 150, (round_ + 1) * 150):
            expected.append(order_flow(h, n, f"u{n % 7}", cancel=n % 4 == 0))
        if round_ < 3:
            service.kill()
            service.start_and_wait()
    orders = sum(o for o, _ in expected)
    h.wait_for(TOTALS, f"{orders}/{sum(r for _, r in expected)}/{orders}", timeout=60)
    h.wait_for("SELECT count() FROM {db}.orders_analytics FINAL", "600")
    assert h.scalar("SELECT count() - uniqExact(event_id) FROM {db}.orders_analytics") == "0"
    h.wait_for("SELECT toString(pending) FROM system.one ARRAY JOIN [0] AS pending", "0")


def test_clickhouse_down_backlog_drains_after(harness: Harness) -> None:
    h = harness
    if not h.stack.is_managed("clickhouse"):
        pytest.skip("ClickHouse comes from the environment")
    h.start()
    order_flow(h, 0, "u1", cancel=False)
    h.wait_for(TOTALS, "1/900/1")
    h.stack.stop_server("clickhouse")
    try:
        expected = [order_flow(h, n, "u1", cancel=n % 5 == 0) for n in range(1, 200)]
        # The consumer has read a batch it cannot store: it keeps it pending and retries.
        deadline = time.monotonic() + 20
        while h.redis.xinfo_groups(h.orders)[0]["pending"] == 0:
            assert time.monotonic() < deadline, "the consumer never read the backlog"
            time.sleep(0.05)
    finally:
        h.stack.start_server("clickhouse")
    orders = 1 + sum(o for o, _ in expected)
    h.wait_for(TOTALS, f"{orders}/{900 + sum(r for _, r in expected)}/{orders}", timeout=60)


def test_malformed_message_is_dead_lettered_and_the_pipeline_carries_on(harness: Harness) -> None:
    h = harness
    h.start()
    bad_id = h.redis.xadd(
        h.orders, {EVENT_ID_FIELD: b"bad", ENVELOPE_FIELD: b"\x00\xffnot an envelope"}
    ).decode()  # type: ignore[union-attr]
    order_flow(h, 1, "u1", cancel=False)
    h.wait_for(TOTALS, "1/901/1")
    deadline = time.monotonic() + 10
    letters: list[Any] = []
    while not letters and time.monotonic() < deadline:
        letters = h.redis.xrange(f"{h.orders}.dead-letter")  # type: ignore[assignment]
        time.sleep(0.05)
    ((_, fields),) = letters
    assert fields[b"source_id"].decode() == bad_id
    assert fields[b"reason"].startswith(b"malformed: envelope does not decode")
    assert fields[b"original.envelope"] == b"\x00\xffnot an envelope"
    info = h.redis.xinfo_groups(h.orders)[0]
    assert info["pending"] == 0


def test_users_service_events_reach_clickhouse_through_the_relay(
    harness: Harness, start_service: Callable[..., ServiceProcess], mongo_db_name: str
) -> None:

    from promo.v1 import users_pb2, users_pb2_grpc
    from promo_libs.events import USERS_STREAM

    h = harness
    h.env["STREAMS"] = USERS_STREAM
    h.env["CONSUMER_NAME"] = f"sync-{h.database}"
    users = start_service(
        "users",
        [sys.executable, "-m", "users_service"],
        extra_env={
            "MONGODB_DB_NAME": mongo_db_name,
            "ARGON2_MEMORY_KIB": "8192",
            "ARGON2_TIME_COST": "1",
        },
    )
    with users.sync_channel() as channel:
        stub = users_pb2_grpc.UserServiceStub(channel)
        user = stub.CreateUser(
            users_pb2.CreateUserRequest(
                user=users_pb2.User(email=f"{h.database}@example.com", display_name="Relayed"),
                password="correct horse battery",
            )
        )
    h.start()  # after the write: the group starts from 0, so earlier events arrive too
    h.wait_for(
        f"SELECT display_name FROM {{db}}.users FINAL WHERE user_id = '{user.id}'", "Relayed"
    )


class Truth:
    """What the published events state, as MongoDB documents (reconcile's truth side)."""

    def __init__(self) -> None:
        self.users: dict[str, dict[str, Any]] = {}
        self.codes: dict[str, dict[str, Any]] = {}
        self.usages: dict[str, dict[str, Any]] = {}
        self.orders: dict[str, dict[str, Any]] = {}


MONTHS = [datetime(2024, month, 28, 22, 0, tzinfo=UTC) for month in (1, 2, 3, 4)]


def _millis(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def publish_month_spanning_orders(h: Harness, truth: Truth, numbers: range) -> None:
    """Orders whose consecutive events fall in four different months (and across month ends),
    so that every batch spans several partitions: created, then confirmed with a code (and a
    redemption) or rejected, some of them cancelled (and their redemption released)."""
    for n in numbers:
        user, code = f"u{n % 9}", f"p{n % 3}"
        at = MONTHS[n % 4] + timedelta(minutes=97 * n % (4 * 1440))  # the 28th to the 2nd
        order_id, subtotal = f"o{n}", 1000 + n
        h.publish(
            h.orders,
            synthetic.order_event("created", order_id, user, at, subtotal=subtotal, version=1),
        )
        document = {
            "_id": order_id,
            "user_id": user,
            "currency": "EUR",
            "created_at": _millis(at),
            "subtotal_minor": subtotal,
            "status": "PENDING",
        }
        truth.orders[order_id] = document
        if n % 7 == 3:
            h.publish(
                h.orders,
                synthetic.order_event("rejected", order_id, user, at, subtotal=subtotal, version=2),
            )
            document["status"] = "REJECTED"
            continue
        discount = 100
        common = {"subtotal": subtotal, "discount": discount, "code_id": code}
        h.publish(
            h.orders, synthetic.order_event("confirmed", order_id, user, at, **common, version=2)
        )
        h.publish(
            h.codes,
            synthetic.usage_event(
                "redeemed", order_id, code, user, at, amount=subtotal, discount=discount, version=1
            ),
        )
        document.update(status="CONFIRMED", discount_minor=discount, promo_code_id=code)
        usage = {
            "_id": order_id,
            "promo_id": code,
            "user_id": user,
            "currency": "EUR",
            "created_at": _millis(at),
            "discount": discount,
            "order_amount": subtotal,
            "status": "ACTIVE",
        }
        truth.usages[order_id] = usage
        if n % 4 == 1:
            h.publish(
                h.orders,
                synthetic.order_event("cancelled", order_id, user, at, **common, version=3),
            )
            h.publish(
                h.codes,
                synthetic.usage_event(
                    "released",
                    order_id,
                    code,
                    user,
                    at,
                    amount=subtotal,
                    discount=discount,
                    version=2,
                ),
            )
            document["status"] = "CANCELLED"
            usage["status"] = "RELEASED"


def publish_dimensions(h: Harness, truth: Truth) -> None:
    for n in range(9):
        user_id = f"u{n}"
        h.publish(h.users, synthetic.user_created(user_id, MONTHS[0]))
        truth.users[user_id] = {"_id": user_id, "email": f"{user_id}@example.com", "active": True}
    for n in range(3):
        code_id = f"p{n}"
        created = events_pb2.PromoCodeCreated(promo_code=synthetic.promo_code(code_id, MONTHS[0]))
        h.publish(
            h.codes,
            synthetic.envelope(
                "promo_code_created",
                created,
                aggregate_type="promo_code",
                aggregate_id=code_id,
                version=1,
                at=MONTHS[0],
            ),
        )
        truth.codes[code_id] = {
            "_id": code_id,
            "code": f"CODE-{code_id}".upper(),
            "rules": {"active": True, "discount_type": "PERCENTAGE"},
        }


def reconcile_differences(h: Harness, truth: Truth) -> list[Difference]:
    """reconcile's own comparison of every table, the truth built from the published events."""
    settings = ClickHouseSettings(
        clickhouse_host=h.stack.clickhouse_host,
        clickhouse_port=h.stack.clickhouse_port,
        clickhouse_database=h.database,
    )
    facts = truth_facts(
        truth.users.values(), truth.codes.values(), truth.usages.values(), truth.orders.values()
    )

    async def analytics() -> Facts:
        clickhouse = ClickHouse(settings)
        try:
            return await analytics_facts(clickhouse)
        finally:
            await clickhouse.close()

    return differences(facts, asyncio.run(analytics()))


def test_clickhouse_killed_during_month_spanning_inserts_many_times_reconciles_to_zero(
    harness: Harness,
) -> None:
    h = harness
    if not h.stack.is_managed("clickhouse"):
        pytest.skip("ClickHouse comes from the environment")
    truth = Truth()
    publish_dimensions(h, truth)
    service = h.start()
    rng = random.Random(20241201)
    kills = 8
    for round_ in range(kills):
        # A backlog for several batches of 300 entries, each batch spanning four months ...
        publish_month_spanning_orders(h, truth, range(round_ * 250, (round_ + 1) * 250))
        # ... and ClickHouse SIGKILLed at a random moment while the consumer inserts it.
        time.sleep(rng.uniform(0.05, 0.6))
        h.stack.kill_server("clickhouse")
        h.stack.start_server("clickhouse")
    deadline = time.monotonic() + 120
    found = reconcile_differences(h, truth)
    while found:
        assert time.monotonic() < deadline, f"{len(found)} differences, e.g. {found[:5]}"
        time.sleep(0.5)
        found = reconcile_differences(h, truth)
    days = {document["created_at"] // 1000 // 86400 for document in truth.orders.values()}
    assert len(days) > 15  # days of five months: every batch spanned several partitions
    # The kills hit the consumer while it was writing: it logged failed writes and retried.
    assert service.log_tail(100_000).count("storing a batch failed; retrying") >= kills
    # Each (entity, version) stored once, not merely hidden by FINAL.
    for table, key in (
        ("orders_analytics", "order_id"),
        ("promo_code_usages_analytics", "usage_id"),
    ):
        assert h.scalar(f"SELECT count() - uniqExact({key}, version) FROM {{db}}.{table}") == "0"
