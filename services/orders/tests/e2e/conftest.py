"""The three services as real processes (users, promocodes, orders), each with its own database,
and helpers that talk to them only over gRPC."""

from __future__ import annotations

import asyncio
import random
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import grpc
import pymongo
import pytest
import pytest_asyncio

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
from promo_libs.grpc.errors import error_info

COMMON = {
    "METRICS_PORT": "0",
    "HEALTH_CHECK_INTERVAL_SECONDS": "0.2",
    "SHUTDOWN_GRACE_SECONDS": "2",
}
_T = TypeVar("_T")


@dataclass
class Platform:
    users: ServiceProcess
    promocodes: ServiceProcess
    orders: ServiceProcess
    orders_db_name: str

    def stop(self) -> None:
        for service in (self.orders, self.promocodes, self.users):
            service.terminate()


def start_platform(
    stack: Stack,
    label: str,
    orders_env: Mapping[str, str] | None = None,
    promocodes_env: Mapping[str, str] | None = None,
) -> Platform:
    suffix = f"{label}_{free_port()}"
    users = stack.service(
        f"users-{label}",
        [sys.executable, "-m", "users_service"],
        free_port(),
        {
            **COMMON,
            "MONGODB_DB_NAME": f"e2e_ou_{suffix}",
            "ARGON2_MEMORY_KIB": "8192",
            "ARGON2_TIME_COST": "1",
            "ARGON2_PARALLELISM": "1",
        },
    )
    promocodes = stack.service(
        f"promocodes-{label}",
        [sys.executable, "-m", "promocodes_service"],
        free_port(),
        {
            **COMMON,
            "MONGODB_DB_NAME": f"e2e_op_{suffix}",
            "USERS_ADDR": users.address,
            **(promocodes_env or {}),
        },
    )
    orders_db_name = f"e2e_oo_{suffix}"
    orders = stack.service(
        f"orders-{label}",
        [sys.executable, "-m", "orders_service"],
        free_port(),
        {
            **COMMON,
            "MONGODB_DB_NAME": orders_db_name,
            "USERS_ADDR": users.address,
            "PROMOCODES_ADDR": promocodes.address,
            **(orders_env or {}),
        },
    )
    users.start_and_wait()
    promocodes.start_and_wait()
    orders.start_and_wait()
    return Platform(users, promocodes, orders, orders_db_name)


@dataclass
class Clients:
    users: users_pb2_grpc.UserServiceStub
    codes: promo_codes_pb2_grpc.PromoCodeServiceStub
    orders: orders_pb2_grpc.OrderServiceStub


@pytest_asyncio.fixture(loop_scope="session")
async def clients(platform: Platform) -> AsyncIterator[Clients]:
    async with (
        platform.users.channel() as users,
        platform.promocodes.channel() as codes,
        # As staff, who may order for any user (orders_service.entrypoints.policy): these tests
        # are about the saga; end users' own calls are tests/e2e/test_zero_trust.py's.
        platform.orders.channel() as orders,
    ):
        yield Clients(
            users_pb2_grpc.UserServiceStub(users),
            promo_codes_pb2_grpc.PromoCodeServiceStub(codes),
            orders_pb2_grpc.OrderServiceStub(orders),
        )


@pytest.fixture(scope="module")
def orders_db(stack: Stack, platform: Platform) -> Iterator[Any]:
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(stack.mongo_uri)
    yield client[platform.orders_db_name]
    client.close()


def eur(amount: int) -> common_pb2.Money:
    return common_pb2.Money(currency_code="EUR", amount_minor=amount)


async def new_user(clients: Clients) -> users_pb2.User:
    return await clients.users.CreateUser(
        users_pb2.CreateUserRequest(
            user=users_pb2.User(email=f"o.{uuid.uuid4().hex[:12]}@example.com", display_name="O"),
            password="correct horse battery",
        )
    )


async def new_code(clients: Clients, **fields: Any) -> promo_codes_pb2.PromoCode:
    if "percentage" not in fields:
        fields.setdefault("fixed_amount", eur(500))
    code = f"E2E{uuid.uuid4().hex[:10].upper()}"
    return await clients.codes.CreatePromoCode(
        promo_codes_pb2.CreatePromoCodeRequest(
            promo_code=promo_codes_pb2.PromoCode(code=code, **fields)
        )
    )


def order_request(
    user_id: str, code: str | None = None, amount: int = 5000, key: str | None = None
) -> orders_pb2.CreateOrderRequest:
    request = orders_pb2.CreateOrderRequest(
        user_id=user_id, amount=eur(amount), idempotency_key=key or uuid.uuid4().hex
    )
    if code is not None:
        request.promo_code = code
    return request


async def usages_of(
    clients: Clients, promo_code_id: str, status: int = 0
) -> list[promo_codes_pb2.PromoCodeUsage]:
    found: list[promo_codes_pb2.PromoCodeUsage] = []
    token = ""
    while True:
        page = await clients.codes.ListPromoCodeUsages(
            promo_codes_pb2.ListPromoCodeUsagesRequest(
                promo_code_id=promo_code_id,
                status=status,
                page_size=1000,
                page_token=token,  # type: ignore[arg-type]
            )
        )
        found += page.promo_code_usages
        token = page.next_page_token
        if not token:
            return found


async def orders_of(clients: Clients, user_id: str = "", status: int = 0) -> list[orders_pb2.Order]:
    found: list[orders_pb2.Order] = []
    token = ""
    while True:
        page = await clients.orders.ListOrders(
            orders_pb2.ListOrdersRequest(
                user_id=user_id,
                status=status,
                page_size=1000,
                page_token=token,  # type: ignore[arg-type]
            )
        )
        found += page.orders
        token = page.next_page_token
        if not token:
            return found


async def eventually(
    check: Callable[[], Awaitable[_T | None]], within: float, what: str, step: float = 0.2
) -> _T:
    """Polls `check` until it returns something other than None (a deadline, not a sleep)."""
    give_up = time.monotonic() + within
    while True:
        result = await check()
        if result is not None:
            return result
        if time.monotonic() > give_up:
            raise AssertionError(f"not reached within {within:.0f}s: {what}")
        await asyncio.sleep(step)


def utc_now() -> datetime:
    return datetime.now(UTC)


async def definite(
    clients: Clients, request: orders_pb2.CreateOrderRequest, within: float = 150.0
) -> tuple[str, str]:
    """CreateOrder until the answer is definite, as a client should: UNAVAILABLE means the
    outcome is unknown, so retry with the same idempotency key, backing off. Returns
    ("CONFIRMED", order id) or (rejection reason, order id)."""
    give_up = time.monotonic() + within
    pause = 0.2
    while True:
        try:
            order = await clients.orders.CreateOrder(request, timeout=30)
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                if time.monotonic() > give_up:
                    raise
                await asyncio.sleep(pause * (0.5 + random.random()))
                pause = min(pause * 2, 3.0)
                continue
            info = error_info(exc)
            assert exc.code() == grpc.StatusCode.FAILED_PRECONDITION, exc.details()
            assert info is not None and info.metadata["order_id"]
            return info.reason, info.metadata["order_id"]
        return orders_pb2.OrderStatus.Name(order.status).removeprefix("ORDER_STATUS_"), order.id


@dataclass
class Replicas:
    """Two orders replicas and two promocodes replicas against the same stores (issue 12), each
    orders replica calling its own promocodes replica."""

    users: ServiceProcess
    p1: ServiceProcess
    p2: ServiceProcess
    r1: ServiceProcess  # orders, calling p1
    r2: ServiceProcess  # orders, calling p2
    promocodes_db: str
    orders_db: str

    def all(self) -> list[ServiceProcess]:
        return [self.r1, self.r2, self.p1, self.p2, self.users]


def start_replicas(
    stack: Stack,
    label: str,
    r1_env: Mapping[str, str],
    r2_env: Mapping[str, str],
    promocodes_env: Mapping[str, str] | None = None,
) -> Replicas:
    suffix = f"{label}_{free_port()}"
    users = stack.service(
        f"users-{label}",
        [sys.executable, "-m", "users_service"],
        free_port(),
        {
            **COMMON,
            "MONGODB_DB_NAME": f"e2e_ru_{suffix}",
            "ARGON2_MEMORY_KIB": "8192",
            "ARGON2_TIME_COST": "1",
            "ARGON2_PARALLELISM": "1",
        },
    )
    promocodes_db, orders_db = f"e2e_rp_{suffix}", f"e2e_ro_{suffix}"

    def promocodes(name: str) -> ServiceProcess:
        return stack.service(
            f"promocodes-{label}-{name}",
            [sys.executable, "-m", "promocodes_service"],
            free_port(),
            {
                **COMMON,
                "MONGODB_DB_NAME": promocodes_db,
                "USERS_ADDR": users.address,
                **(promocodes_env or {}),
            },
        )

    p1, p2 = promocodes("p1"), promocodes("p2")

    def orders(name: str, promocodes: ServiceProcess, env: Mapping[str, str]) -> ServiceProcess:
        return stack.service(
            f"orders-{label}-{name}",
            [sys.executable, "-m", "orders_service"],
            free_port(),
            {
                **COMMON,
                "MONGODB_DB_NAME": orders_db,
                "USERS_ADDR": users.address,
                "PROMOCODES_ADDR": promocodes.address,
                **env,
            },
        )

    running = Replicas(
        users, p1, p2, orders("r1", p1, r1_env), orders("r2", p2, r2_env), promocodes_db, orders_db
    )
    for service in reversed(running.all()):
        service.start_and_wait()
    return running


def clients_of(
    users: grpc.aio.Channel, codes: grpc.aio.Channel, orders: grpc.aio.Channel
) -> Clients:
    """Clients that call users, promocodes and orders over the given channels."""
    return Clients(
        users_pb2_grpc.UserServiceStub(users),
        promo_codes_pb2_grpc.PromoCodeServiceStub(codes),
        orders_pb2_grpc.OrderServiceStub(orders),
    )
