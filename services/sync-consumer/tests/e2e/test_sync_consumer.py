"""sync-consumer as a process, between the real Redis and ClickHouse 18.16 of the local stack.

Each test has its own database and streams, so tests never see each other's rows.
"""

import asyncio
import contextlib
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis

from devstack.servers import RedisCluster
from devstack.service import ServiceProcess
from devstack.stack import Stack
from promo.v1 import events_pb2
from promo_libs.bus import ENVELOPE_FIELD, EVENT_ID_FIELD, TYPE_FIELD
from promo_libs.clickhouse.client import ClickHouse
from promo_reconcile import Difference, Facts, analytics_facts, differences, truth_facts
from sync_consumer.adapters.redis_streams import dead_letter_stream
from sync_consumer_testing import synthetic

AT = datetime(2024, 1, 31, 23, 0, tzinfo=UTC)


class InsertRefusingProxy:
    """An HTTP proxy in front of ClickHouse that, while refusing, answers every INSERT
    (aiochclient puts the statement in the URL) the way an overloaded server does and passes
    every other query: ClickHouse accepts queries but refuses inserts. One request per
    connection (`Connection: close` both ways), so each request is looked at."""

    REFUSAL = b"Code: 252, e.displayText() = DB::Exception: Too many parts (refused by the test)"

    def __init__(self, upstream_port: int) -> None:
        self._upstream = upstream_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.refusing = False
        threading.Thread(target=self._accept, daemon=True).start()

    def close_streams(self) -> None:
        for stream in (self.users, self.codes, self.orders):
            for key in (stream, dead_letter_stream(stream)):
                self.redis.delete(key)

    def close(self) -> None:
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        with client, contextlib.suppress(OSError):
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = client.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, body = data.split(b"\r\n\r\n", 1)
            request_line, *headers = head.split(b"\r\n")
            if self.refusing and b"query=INSERT" in request_line:
                client.sendall(
                    b"HTTP/1.1 500 Internal Server Error\r\nConnection: close\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(self.REFUSAL), self.REFUSAL)
                )
                return
            length = next(
                (
                    int(h.split(b":", 1)[1])
                    for h in headers
                    if h.lower().startswith(b"content-length:")
                ),
                0,
            )
            while len(body) < length:
                chunk = client.recv(65536)
                if not chunk:
                    return
                body += chunk
            kept = [h for h in headers if not h.lower().startswith(b"connection:")]
            with socket.create_connection(("127.0.0.1", self._upstream)) as upstream:
                upstream.sendall(
                    b"\r\n".join([request_line, *kept, b"Connection: close"]) + b"\r\n\r\n" + body
                )
                while answer := upstream.recv(65536):
                    client.sendall(answer)


class Harness:
    def __init__(
        self,
        stack: Stack,
        start_service: Callable[..., ServiceProcess],
        client: Any = None,
        redis_env: dict[str, str] | None = None,
    ) -> None:
        token = uuid.uuid4().hex[:10]
        self.stack = stack
        self.database = f"e2e_{token}"
        self.users = f"promo.events.t{token}.users"
        self.codes = f"promo.events.t{token}.promo_codes"
        self.orders = f"promo.events.t{token}.orders"
        self.redis = client or redis.Redis(
            host=stack.redis_host, port=stack.redis_port, password=stack.redis_password
        )
        self._start_service = start_service
        self.env = {
            "CLICKHOUSE_DATABASE": self.database,
            "STREAMS": f"{self.users},{self.codes},{self.orders}",
            "CONSUMER_NAME": "sync-1",
            "BATCH_SIZE": "300",
            "BATCH_WAIT_MS": "100",
            "CLAIM_IDLE_MS": "1000",
            "MAX_FAILURES": "3",
            "HEALTH_CHECK_INTERVAL_SECONDS": "0.2",
            **(redis_env or {}),
        }

    def start(self, *, wait: bool = True) -> ServiceProcess:
        return self._start_service(
            "sync-consumer", [sys.executable, "-m", "sync_consumer"], extra_env=self.env, wait=wait
        )

    def tool(self, *args: str) -> str:
        """Runs `python -m sync_consumer <args>` as an operator would, with the consumer's env."""
        # The consumer's own Redis user on the stack's Redis (none on a test's cluster).
        user = {} if "REDIS_HOST" in self.env else self.stack.redis_user_env("sync-consumer")
        env = {**os.environ, **self.stack.env, **user, **self.env}
        done = subprocess.run(
            [sys.executable, "-m", "sync_consumer", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        return done.stdout

    def deliveries(self, stream: str) -> list[int]:
        pending = self.redis.xpending_range(stream, "sync-consumer", "-", "+", 10_000)
        return [int(p["times_delivered"]) for p in pending]

    def publish(self, stream: str, message: Any, event_id: str | None = None) -> str:
        fields = {
            EVENT_ID_FIELD: event_id or message.event_id,
            TYPE_FIELD: message.type,
            ENVELOPE_FIELD: message.SerializeToString(),
        }
        return self.redis.xadd(stream, fields).decode()  # type: ignore[union-attr]

    def query(self, sql: str) -> list[list[str]]:
        text = self.stack.clickhouse_query(sql.format(db=self.database))
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

    def wait_for_letters(self, stream: str, count: int, timeout: float = 20.0) -> list[Any]:
        deadline = time.monotonic() + timeout
        letters: list[Any] = []
        while time.monotonic() < deadline:
            letters = self.redis.xrange(dead_letter_stream(stream))  # type: ignore[assignment]
            if len(letters) >= count:
                return letters
            time.sleep(0.05)
        raise AssertionError(f"{len(letters)} dead letters on {stream}, not {count}")

    def wait_for_pending(self, stream: str, count: int, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        pending = None
        while time.monotonic() < deadline:
            pending = self.redis.xinfo_groups(stream)[0]["pending"]
            if pending == count:
                return
            time.sleep(0.05)
        raise AssertionError(f"{pending} entries pending on {stream}, not {count}")

    def close_streams(self) -> None:
        for stream in (self.users, self.codes, self.orders):
            for key in (stream, dead_letter_stream(stream)):
                self.redis.delete(key)

    def close(self) -> None:
        streams = (self.users, self.codes, self.orders)
        for key in (*streams, *(dead_letter_stream(s) for s in streams)):
            self.redis.delete(key)  # one by one: on a cluster they live in different slots
        self.redis.close()
        with contextlib.suppress(Exception):
            self.stack.clickhouse_query(
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
    ((_, fields),) = h.wait_for_letters(h.orders, 1)
    assert fields[b"source_id"].decode() == bad_id
    assert fields[b"reason"].startswith(b"malformed: envelope does not decode")
    assert fields[b"original.envelope"] == b"\x00\xffnot an envelope"
    # The letter is acknowledged with it; the batch's other entries once their refresh is done.
    h.wait_for_pending(h.orders, 0)


def test_an_order_at_the_epoch_is_dead_lettered_and_the_batch_lands(
    harness: Harness,
) -> None:
    # create_time exactly 0 once made the mapping assert; it now says so (MalformedEvent). The
    # "mapping failed: ..." path for errors nobody foresaw is proven in tests/unit/test_pipeline.
    h = harness
    h.start()
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    bad_id = h.publish(
        h.orders, synthetic.order_event("confirmed", "o-epoch", "u1", epoch, subtotal=5, version=2)
    )
    order_flow(h, 1, "u1", cancel=False)
    h.wait_for(TOTALS, "1/901/1")
    letters = h.wait_for_letters(h.orders, 1)
    ((_, fields),) = letters
    assert fields[b"source_id"].decode() == bad_id
    assert fields[b"reason"] == b"malformed: order create_time at the epoch"
    assert h.scalar("SELECT count() FROM {db}.orders_analytics WHERE order_id = 'o-epoch'") == "0"
    h.wait_for_pending(h.orders, 0)


def test_restarts_while_clickhouse_refuses_inserts_dead_letter_nothing(
    harness: Harness,
) -> None:
    h = harness
    proxy = InsertRefusingProxy(h.stack.clickhouse_port)
    h.env["CLICKHOUSE_PORT"] = str(proxy.port)
    try:
        service = h.start()
        order_flow(h, 0, "u1", cancel=False)
        h.wait_for(TOTALS, "1/900/1")
        proxy.refusing = True
        expected = [order_flow(h, n, f"u{n % 3}", cancel=n % 4 == 0) for n in range(1, 40)]
        deadline = time.monotonic() + 30
        while not h.deliveries(h.codes):
            assert time.monotonic() < deadline, "the consumer never read the backlog"
            time.sleep(0.05)
        # Each start claims every pending entry (XAUTOCLAIM raises its delivery count) and
        # then cannot store it (the usages stream is claimed first and holds the start); kill
        # it there, as a failing startup probe would, five times.
        for restart in range(5):
            seen = max(h.deliveries(h.codes))
            service.kill()
            service.start()
            deadline = time.monotonic() + 60
            while max(h.deliveries(h.codes)) <= seen:
                assert time.monotonic() < deadline, (
                    f"restart {restart} never claimed the batch: {service.log_tail()}"
                )
                time.sleep(0.05)
        service.kill()
        assert min(h.deliveries(h.codes)) > 3  # MAX_FAILURES: deliveries would have counted
        proxy.refusing = False
        service.start_and_wait()
        orders = 1 + sum(o for o, _ in expected)
        h.wait_for(TOTALS, f"{orders}/{900 + sum(r for _, r in expected)}/{orders}", timeout=60)
        for stream in (h.users, h.codes, h.orders):
            h.wait_for_pending(stream, 0)
            assert h.redis.xlen(dead_letter_stream(stream)) == 0
    finally:
        proxy.close()


def test_refused_rows_are_dead_lettered_and_replayed_exactly_once_after_the_fix(
    harness: Harness,
) -> None:
    h = harness
    h.start()
    h.publish(h.users, synthetic.user_created("u0", AT))
    h.wait_for("SELECT count() FROM {db}.users", "1")
    # An operator's mistake: the table loses a column every users row carries. ClickHouse
    # refuses each such INSERT for what it holds, however often it is tried.
    h.query("ALTER TABLE {db}.users DROP COLUMN display_name")
    refused = [h.publish(h.users, synthetic.user_created(f"u{n}", AT)) for n in range(1, 6)]
    order_flow(h, 1, "u1", cancel=False)  # the other streams carry on meanwhile
    h.wait_for(TOTALS, "1/901/1")
    letters = h.wait_for_letters(h.users, len(refused))
    assert sorted(f[b"source_id"].decode() for _, f in letters) == sorted(refused)
    for _, fields in letters:
        assert fields[b"reason"].startswith(b"rejected "), fields[b"reason"]
        assert b"display_name" in fields[b"reason"]
    h.wait_for_pending(h.users, 0)
    assert h.scalar("SELECT count() FROM {db}.users") == "1"

    h.query("ALTER TABLE {db}.users ADD COLUMN display_name String AFTER email")
    out = json.loads(h.tool("replay-dead-letters"))
    assert out == {"replayed": {h.users: 5, h.codes: 0, h.orders: 0}}
    h.wait_for("SELECT count() FROM {db}.users", "6")
    assert json.loads(h.tool("replay-dead-letters"))["replayed"][h.users] == 0
    assert h.redis.xlen(dead_letter_stream(h.users)) == 0
    h.wait_for_pending(h.users, 0)
    rows = h.query("SELECT user_id, count() FROM {db}.users GROUP BY user_id ORDER BY user_id")
    assert rows == [[f"u{n}", "1"] for n in range(6)]
    assert h.scalar("SELECT display_name FROM {db}.users WHERE user_id = 'u3'") == "User u3"


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
            "code": f"CODE-{code}".upper(),
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
    settings = h.stack.clickhouse_settings(h.database)
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


def test_the_relay_and_the_consumer_on_a_redis_cluster(
    stack: Stack,
    start_service: Callable[..., ServiceProcess],
    redis_cluster: RedisCluster,
    mongo_db_name: str,
) -> None:
    """Everything the consumer does in Redis (groups, reads, claims, dead letters and their
    replay, the rebuild gate's scripts) and a service's outbox relay, on three masters."""
    from promo.v1 import users_pb2, users_pb2_grpc
    from promo_libs.events import USERS_STREAM

    client = redis.RedisCluster(host=redis_cluster.host, port=redis_cluster.port)
    h = Harness(stack, start_service, client, redis_cluster.env())
    h.users = USERS_STREAM  # the users service's relay publishes there
    h.env["STREAMS"] = f"{h.users},{h.codes},{h.orders}"
    try:
        h.close_streams()
        slots = {client.get_node_from_key(s).name for s in (h.users, h.codes, h.orders)}
        print(f"\nstreams on {len(slots)} of 3 masters")
        users = start_service(
            "users",
            [sys.executable, "-m", "users_service"],
            extra_env={
                **redis_cluster.env(),
                "MONGODB_DB_NAME": mongo_db_name,
                "ARGON2_MEMORY_KIB": "8192",
                "ARGON2_TIME_COST": "1",
            },
        )
        h.start()
        bad_id = h.redis.xadd(h.orders, {EVENT_ID_FIELD: b"bad", ENVELOPE_FIELD: b"\x00\xff"})
        expected = [order_flow(h, n, f"u{n % 3}", cancel=n % 4 == 0) for n in range(20)]
        orders = sum(o for o, _ in expected)
        h.wait_for(TOTALS, f"{orders}/{sum(r for _, r in expected)}/{orders}")
        with users.sync_channel() as channel:
            user = users_pb2_grpc.UserServiceStub(channel).CreateUser(
                users_pb2.CreateUserRequest(
                    user=users_pb2.User(
                        email=f"{h.database}@example.com", display_name="On a cluster"
                    ),
                    password="correct horse battery",
                )
            )
        h.wait_for(
            f"SELECT display_name FROM {{db}}.users FINAL WHERE user_id = '{user.id}'",
            "On a cluster",
        )
        letters = h.wait_for_letters(h.orders, 1)
        assert [f[b"source_id"] for _, f in letters] == [bad_id]
        assert letters[0][1][b"reason"].startswith(b"malformed")
        out = json.loads(h.tool("replay-dead-letters"))
        assert out["replayed"][h.orders] == 1
        again = h.wait_for_letters(h.orders, 1)  # still malformed: dead-lettered anew, once
        assert again[0][0] != letters[0][0]
        for stream in (h.users, h.codes, h.orders):
            h.wait_for_pending(stream, 0)
    finally:
        h.close()
