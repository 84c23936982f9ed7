"""Real processes over gRPC: a user service and a promocodes service, each with its own database."""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import grpc
import pymongo
import pytest
import pytest_asyncio

from devstack.ports import free_port
from devstack.service import ServiceProcess
from devstack.stack import Stack
from promo.v1 import common_pb2, promo_codes_pb2_grpc, users_pb2, users_pb2_grpc
from promo_libs.grpc.errors import error_info


def promocodes_process(
    stack: Stack, db_name: str, users_addr: str, extra: Mapping[str, str] | None = None
) -> ServiceProcess:
    return stack.service(
        "promocodes",
        [sys.executable, "-m", "promocodes_service"],
        free_port(),
        {
            "METRICS_PORT": "0",
            "MONGODB_DB_NAME": db_name,
            "USERS_ADDR": users_addr,
            "HEALTH_CHECK_INTERVAL_SECONDS": "0.2",
            "SHUTDOWN_GRACE_SECONDS": "2",
            **(extra or {}),
        },
    )


@pytest.fixture(scope="module")
def users_service(stack: Stack) -> Iterator[ServiceProcess]:
    service = stack.service(
        "users",
        [sys.executable, "-m", "users_service"],
        free_port(),
        {
            "METRICS_PORT": "0",
            "MONGODB_DB_NAME": f"e2e_pc_users_{free_port()}",
            "HEALTH_CHECK_INTERVAL_SECONDS": "0.2",
            # Cheaper hashes keep the suite fast; the algorithm and code path are the same.
            "ARGON2_MEMORY_KIB": "8192",
            "ARGON2_TIME_COST": "1",
            "ARGON2_PARALLELISM": "1",
        },
    )
    service.start_and_wait()
    yield service
    service.terminate()


@pytest.fixture(scope="module")
def promo_db_name() -> str:
    return f"e2e_promocodes_{free_port()}"


@pytest.fixture(scope="module")
def promocodes_service(
    stack: Stack, users_service: ServiceProcess, promo_db_name: str
) -> Iterator[ServiceProcess]:
    service = promocodes_process(stack, promo_db_name, users_service.address)
    service.start_and_wait()
    yield service
    service.terminate()


@pytest.fixture(scope="module")
def promo_db(stack: Stack, promo_db_name: str) -> Iterator[Any]:
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
        stack.mongo_uri, tz_aware=True
    )
    yield client[promo_db_name]
    client.drop_database(promo_db_name)
    client.close()


@pytest_asyncio.fixture(loop_scope="session")
async def promo(
    promocodes_service: ServiceProcess,
) -> AsyncIterator[promo_codes_pb2_grpc.PromoCodeServiceStub]:
    async with promocodes_service.channel() as channel:
        yield promo_codes_pb2_grpc.PromoCodeServiceStub(channel)


@pytest_asyncio.fixture(loop_scope="session")
async def saga(
    promocodes_service: ServiceProcess,
) -> AsyncIterator[promo_codes_pb2_grpc.PromoCodeServiceStub]:
    """PromoCodeService as the order saga calls it: Redeem and Release are the orders
    workload's alone (promocodes_service.entrypoints.policy)."""
    async with promocodes_service.channel(identity="orders") as channel:
        yield promo_codes_pb2_grpc.PromoCodeServiceStub(channel)


@pytest_asyncio.fixture(loop_scope="session")
async def users(
    users_service: ServiceProcess,
) -> AsyncIterator[users_pb2_grpc.UserServiceStub]:
    async with users_service.channel() as channel:
        yield users_pb2_grpc.UserServiceStub(channel)


async def create_users(
    stub: users_pb2_grpc.UserServiceStub, count: int, tag: str, *, limit: int = 8
) -> list[str]:
    gate = asyncio.Semaphore(limit)

    async def one(index: int) -> str:
        async with gate:
            user = await stub.CreateUser(
                users_pb2.CreateUserRequest(
                    user=users_pb2.User(
                        email=f"{tag}-{index}@example.com", display_name=f"U{index}"
                    ),
                    password="correct horse battery staple",
                )
            )
        return user.id

    return list(await asyncio.gather(*(one(i) for i in range(count))))


def eur(amount: int) -> common_pb2.Money:
    return common_pb2.Money(currency_code="EUR", amount_minor=amount)


async def refused(call: Any) -> grpc.aio.AioRpcError:
    """The error a call fails with (the test fails when it succeeds)."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


def reason(error: grpc.aio.AioRpcError) -> str:
    info = error_info(error)
    return info.reason if info else ""


def assert_counters_match_usages(db: Any, promo_id: str) -> dict[str, Any]:
    """uses / discount_granted equal the ACTIVE usages; nothing pending; per-user limit kept."""
    code = db.promo_codes.find_one({"_id": promo_id})
    active = list(db.promo_code_usages.find({"promo_id": promo_id, "status": "ACTIVE"}))
    assert code["pending"] == {} and code["pending_count"] == 0
    assert code["uses"] == len(active)
    assert code["discount_granted"] == sum(u["discount"] for u in active)
    rules = code["rules"]
    if rules.get("max_uses") is not None:
        assert len(active) <= rules["max_uses"]
    if rules.get("budget") is not None:
        assert code["discount_granted"] <= rules["budget"]
    if rules.get("max_uses_per_user") is not None:
        per_user = Counter(u["user_id"] for u in active)
        assert max(per_user.values(), default=0) <= rules["max_uses_per_user"]
    return dict(code)
