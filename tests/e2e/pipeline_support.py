"""The whole platform as real processes for the pipeline tests: users, promocodes, orders and
sync-consumer on the local stack, each service with its own database, the consumer with its own
ClickHouse database and consumer group; load, polling and reconcile helpers."""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
import redis
from google.protobuf import field_mask_pb2

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
from promo_libs.events import ORDERS_STREAM, PROMO_CODES_STREAM, USERS_STREAM
from promo_reconcile import Difference, ReconcileSettings, reconcile

COMMON = {
    "METRICS_PORT": "0",
    "HEALTH_CHECK_INTERVAL_SECONDS": "0.2",
    "SHUTDOWN_GRACE_SECONDS": "2",
}
LIVE_STREAMS = (USERS_STREAM, PROMO_CODES_STREAM, ORDERS_STREAM)
_T = TypeVar("_T")
RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


@dataclass
class Platform:
    stack: Stack
    token: str
    users: ServiceProcess
    promocodes: ServiceProcess
    orders: ServiceProcess
    consumer: ServiceProcess
    consumer_env: dict[str, str]

    @property
    def clickhouse_db(self) -> str:
        return self.consumer_env["CLICKHOUSE_DATABASE"]

    @property
    def databases(self) -> dict[str, str]:
        return {
            "USERS_MONGODB_DB_NAME": f"pipe_u_{self.token}",
            "PROMOCODES_MONGODB_DB_NAME": f"pipe_p_{self.token}",
            "ORDERS_MONGODB_DB_NAME": f"pipe_o_{self.token}",
        }

    def tool_env(self) -> dict[str, str]:
        """What reconcile and rebuild need: the stack, the consumer's settings, the databases."""
        return {
            **self.stack.env,
            **self.stack.redis_user_env("sync-consumer"),
            **self.consumer_env,
            **self.databases,
        }

    def run_tool(self, module: str, *args: str) -> subprocess.CompletedProcess[str]:
        """`python -m <module> <args>` (reconcile, rebuild) with the tools' env; never raises on
        its exit status, the caller asserts it."""
        return subprocess.run(
            [sys.executable, "-m", module, *args],
            check=False,
            env={**os.environ, **self.tool_env()},
            capture_output=True,
            text=True,
            timeout=300,
        )

    def reconcile_settings(self) -> ReconcileSettings:
        env = self.tool_env()
        clickhouse = self.stack.clickhouse_settings(self.clickhouse_db)
        return ReconcileSettings(
            mongodb_uri=self.stack.mongo_uri,
            clickhouse_host=clickhouse.clickhouse_host,
            clickhouse_port=clickhouse.clickhouse_port,
            clickhouse_database=clickhouse.clickhouse_database,
            clickhouse_user=clickhouse.clickhouse_user,
            clickhouse_password=clickhouse.clickhouse_password,
            users_mongodb_db_name=env["USERS_MONGODB_DB_NAME"],
            promocodes_mongodb_db_name=env["PROMOCODES_MONGODB_DB_NAME"],
            orders_mongodb_db_name=env["ORDERS_MONGODB_DB_NAME"],
        )

    def query(self, sql: str) -> list[list[str]]:
        text = self.stack.clickhouse_query(
            sql.format(db=self.clickhouse_db),
        )
        return [line.split("\t") for line in text.splitlines()]

    def stop(self) -> None:
        for service in (self.consumer, self.orders, self.promocodes, self.users):
            service.terminate()


def start_platform(stack: Stack) -> Platform:
    token = uuid.uuid4().hex[:8]
    client = redis.Redis(
        host=stack.redis_host, port=stack.redis_port, password=stack.redis_password
    )
    client.delete(*LIVE_STREAMS)  # the producers' streams are fixed: start them empty
    client.close()
    databases = {
        "users": f"pipe_u_{token}",
        "promocodes": f"pipe_p_{token}",
        "orders": f"pipe_o_{token}",
    }
    users = stack.service(
        "users-pipe",
        [sys.executable, "-m", "users_service"],
        free_port(),
        {
            **COMMON,
            "MONGODB_DB_NAME": databases["users"],
            "ARGON2_MEMORY_KIB": "8192",
            "ARGON2_TIME_COST": "1",
            "ARGON2_PARALLELISM": "1",
        },
    )
    promocodes = stack.service(
        "promocodes-pipe",
        [sys.executable, "-m", "promocodes_service"],
        free_port(),
        {**COMMON, "MONGODB_DB_NAME": databases["promocodes"], "USERS_ADDR": users.address},
    )
    orders = stack.service(
        "orders-pipe",
        [sys.executable, "-m", "orders_service"],
        free_port(),
        {
            **COMMON,
            "MONGODB_DB_NAME": databases["orders"],
            "USERS_ADDR": users.address,
            "PROMOCODES_ADDR": promocodes.address,
        },
    )
    consumer_env = {
        **COMMON,
        "CLICKHOUSE_DATABASE": f"pipe_{token}",
        "CONSUMER_GROUP": f"sync-{token}",
        "CONSUMER_NAME": "sync-1",
        "BATCH_SIZE": "1000",
        "BATCH_WAIT_MS": "200",
        "CLAIM_IDLE_MS": "2000",
    }
    consumer = stack.service(
        "sync-consumer-pipe", [sys.executable, "-m", "sync_consumer"], free_port(), consumer_env
    )
    for service in (users, promocodes, orders, consumer):
        service.start_and_wait()
    return Platform(stack, token, users, promocodes, orders, consumer, consumer_env)


@dataclass
class Clients:
    users: users_pb2_grpc.UserServiceStub
    codes: promo_codes_pb2_grpc.PromoCodeServiceStub
    orders: orders_pb2_grpc.OrderServiceStub


def eur(amount: int) -> common_pb2.Money:
    return common_pb2.Money(currency_code="EUR", amount_minor=amount)


async def retried(call: Callable[[], Awaitable[_T]], within: float = 120.0) -> _T:
    """A call retried while the answer is unknown (UNAVAILABLE, deadline), as a client should;
    every call here carries an idempotency key or is a read, so retrying is safe."""
    give_up = time.monotonic() + within
    pause = 0.1
    while True:
        try:
            return await call()
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in RETRYABLE or time.monotonic() > give_up:
                raise
        await asyncio.sleep(pause * (0.5 + random.random()))
        pause = min(pause * 2, 2.0)


async def new_user(clients: Clients) -> users_pb2.User:
    request = users_pb2.CreateUserRequest(
        user=users_pb2.User(email=f"p.{uuid.uuid4().hex[:12]}@example.com", display_name="P"),
        password="correct horse battery",
    )
    return await retried(lambda: clients.users.CreateUser(request, timeout=30))


async def new_code(clients: Clients, **fields: Any) -> promo_codes_pb2.PromoCode:
    if "percentage" not in fields:
        fields.setdefault("fixed_amount", eur(500))
    request = promo_codes_pb2.CreatePromoCodeRequest(
        promo_code=promo_codes_pb2.PromoCode(code=f"P{uuid.uuid4().hex[:10].upper()}", **fields)
    )
    return await retried(lambda: clients.codes.CreatePromoCode(request, timeout=30))


async def new_campaign(clients: Clients, **fields: Any) -> promo_codes_pb2.Campaign:
    request = promo_codes_pb2.CreateCampaignRequest(
        campaign=promo_codes_pb2.Campaign(display_name=f"C{uuid.uuid4().hex[:8]}", **fields)
    )
    return await retried(lambda: clients.codes.CreateCampaign(request, timeout=30))


async def generated_codes(clients: Clients, campaign_id: str, count: int) -> list[str]:
    """`count` codes generated into the campaign (the generator's path, not CreatePromoCode)."""
    request = promo_codes_pb2.GeneratePromoCodesRequest(
        prefix="G",
        count=count,
        template=promo_codes_pb2.PromoCode(fixed_amount=eur(300), campaign_id=campaign_id),
        request_id=uuid.uuid4().hex,
    )
    answer = await retried(lambda: clients.codes.GeneratePromoCodes(request, timeout=30))
    return list(answer.codes)


# Products of the load's carts: (product id, category ids, unit price); one without a category
# and one in two, so a line counts in several categories or in none.
CATALOG = (
    ("shoe", ("shoes", "spring"), 3000),
    ("sock", ("kids",), 250),
    ("hat", (), 1200),
    ("bag", ("spring", "sale"), 4500),
)


def cart(rng: random.Random) -> list[common_pb2.LineItem]:
    """One to three lines of distinct products, quantities 1 to 3."""
    return [
        common_pb2.LineItem(
            sku=f"{product}-1",
            product_id=product,
            category_ids=categories,
            quantity=rng.randint(1, 3),
            unit_price=eur(price),
        )
        for product, categories, price in rng.sample(CATALOG, rng.randint(1, 3))
    ]


async def place(
    clients: Clients,
    user_id: str,
    code: str | None,
    amount: int,
    lines: list[common_pb2.LineItem] | None = None,
) -> str | None:
    """CreateOrder until definite; the order id when CONFIRMED, None when rejected. With `lines`
    the order is that cart (and `amount` is not sent)."""
    request = orders_pb2.CreateOrderRequest(user_id=user_id, idempotency_key=uuid.uuid4().hex)
    if lines:
        request.lines.extend(lines)
    else:
        request.amount.CopyFrom(eur(amount))
    if code is not None:
        request.promo_code = code
    try:
        order = await retried(lambda: clients.orders.CreateOrder(request, timeout=30))
    except grpc.aio.AioRpcError as exc:
        assert exc.code() == grpc.StatusCode.FAILED_PRECONDITION, exc.details()
        return None
    return order.id if order.status == orders_pb2.ORDER_STATUS_CONFIRMED else None


async def cancel(clients: Clients, order_id: str) -> None:
    request = orders_pb2.CancelOrderRequest(id=order_id, reason="changed my mind")
    await retried(lambda: clients.orders.CancelOrder(request, timeout=30))


@dataclass(frozen=True)
class Campaigns:
    """The load's two campaigns. A load started with `LoadProcess(..., leave_out=settled_codes)`
    does not use `settled`'s codes, so its statistics stay what they were while that load runs;
    `live` was updated after its creation (a second version) and has no limit, so its statistics
    over a past range do not change either."""

    settled: str
    live: str
    settled_codes: tuple[str, ...]


@dataclass
class Load:
    """Orders with and without codes (some rejected: an exhausted code, a code of items of a
    category the cart lacks), half of them carts of several lines, and cancellations (which
    release the order's usage)."""

    clients: Clients
    users: list[str]
    codes: list[str]
    placed: int = 0
    cancelled: int = 0
    rejected: int = 0
    campaigns: Campaigns | None = None  # set by make_load (the load process needs only codes)
    _rng: random.Random = field(default_factory=lambda: random.Random(5))

    async def run(self, operations: int, concurrency: int = 16) -> None:
        queue: asyncio.Queue[int] = asyncio.Queue()
        for n in range(operations):
            queue.put_nowait(n)

        async def worker() -> None:
            while not queue.empty():
                queue.get_nowait()
                await self.one()

        await asyncio.gather(*(worker() for _ in range(concurrency)))

    async def one(self) -> None:
        user = self._rng.choice(self.users)
        code = self._rng.choice([*self.codes, None])
        lines = cart(self._rng) if self._rng.random() < 0.5 else None
        order_id = await place(self.clients, user, code, self._rng.randrange(1000, 20000), lines)
        self.placed += 1
        if order_id is None:
            self.rejected += 1
        elif self._rng.random() < 0.25:
            await cancel(self.clients, order_id)
            self.cancelled += 1


async def make_load(clients: Clients, users: int = 12) -> Load:
    made = [await new_user(clients) for _ in range(users)]
    settled = await new_campaign(clients, max_uses=10_000, budget=eur(10_000_000))
    live = await new_campaign(clients)
    renamed = promo_codes_pb2.Campaign(id=live.id, display_name=f"{live.display_name} (2)")
    update = promo_codes_pb2.UpdateCampaignRequest(
        campaign=renamed, update_mask=field_mask_pb2.FieldMask(paths=["display_name"])
    )
    await retried(lambda: clients.codes.UpdateCampaign(update, timeout=30))
    settled_codes = [
        *await generated_codes(clients, settled.id, 2),
        (await new_code(clients, campaign_id=settled.id, max_uses_per_user=3)).code,
    ]
    items = promo_codes_pb2.ItemTargeting(include_category_ids=["spring"])
    codes = [
        await new_code(clients),
        await new_code(clients, percentage=promo_codes_pb2.PercentageDiscount(basis_points=1500)),
        await new_code(clients, max_uses_per_user=2),
        await new_code(clients, max_uses=25),  # exhausted early: rejections
        # 20% of the spring lines: rejected for a cart without one (and for an amount).
        await new_code(
            clients,
            campaign_id=live.id,
            percentage=promo_codes_pb2.PercentageDiscount(basis_points=2000),
            target=promo_codes_pb2.DISCOUNT_TARGET_ITEMS,
            targeting=items,
        ),
        await new_code(clients, campaign_id=live.id),
    ]
    all_codes = [*settled_codes, *(c.code for c in codes)]
    return Load(
        clients,
        [u.id for u in made],
        all_codes,
        campaigns=Campaigns(settled.id, live.id, tuple(settled_codes)),
    )


class LoadProcess:
    """`Load.run` in a child process (pipeline_load.py), started and awaited from a test."""

    def __init__(
        self,
        platform: Platform,
        load: Load,
        operations: int,
        concurrency: int,
        leave_out: tuple[str, ...] = (),
    ) -> None:
        """`leave_out`: codes this run does not use."""
        codes = [c for c in load.codes if c not in leave_out]
        self._argv = [
            sys.executable,
            str(Path(__file__).with_name("pipeline_load.py")),
            str(platform.users.pki.folder),
            platform.users.address,
            platform.promocodes.address,
            platform.orders.address,
            str(operations),
            str(concurrency),
            str(random.randrange(1_000_000)),
            ",".join(load.users),
            ",".join(codes),
        ]
        self._process: asyncio.subprocess.Process | None = None

    async def start(self) -> LoadProcess:
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
        self._process = await asyncio.create_subprocess_exec(
            *self._argv, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        return self

    @property
    def done(self) -> bool:
        return self._process is not None and self._process.returncode is not None

    async def wait(self) -> dict[str, int]:
        assert self._process is not None
        out, err = await self._process.communicate()
        assert self._process.returncode == 0, err.decode()[-3000:]
        result: dict[str, int] = json.loads(out.decode().strip().splitlines()[-1])
        return result


async def until_reconciled(platform: Platform, within: float) -> float:
    """Polls reconcile until it finds no difference (the pipeline drained); returns seconds."""
    started = time.monotonic()
    found: list[Difference] = []
    while time.monotonic() - started < within:
        try:
            found, _ = await reconcile(platform.reconcile_settings())
        except Exception as exc:  # ClickHouse still starting
            found = [Difference("error", (repr(exc),), None, None)]
        if not found:
            return time.monotonic() - started
        await asyncio.sleep(1.0)
    shown = "\n".join(str(d) for d in found[:20])
    raise AssertionError(f"{len(found)} differences after {within:.0f}s:\n{shown}")
