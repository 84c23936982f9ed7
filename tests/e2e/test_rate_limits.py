"""Rate limits (I7) over the wire: shared by replicas through Redis, and a log-in flood on one
account is cut off while other users still log in. Limits are set small through
RATE_LIMIT_OVERRIDES, with a refill so slow that none happens during a test."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from grpc_status import rpc_status

from devstack.ports import free_port
from devstack.service import ServiceProcess
from devstack.stack import Stack
from promo.v1 import common_pb2, promo_codes_pb2, promo_codes_pb2_grpc, users_pb2, users_pb2_grpc
from promo_libs.grpc.errors import error_info

pytestmark = pytest.mark.e2e

COMMON = {"METRICS_PORT": "0", "HEALTH_CHECK_INTERVAL_SECONDS": "0.2"}
BURST = 20
EMAIL_BURST = 10


def _retry_delay(error: grpc.aio.AioRpcError) -> float | None:
    from google.rpc import error_details_pb2

    status = rpc_status.from_call(error)
    for detail in status.details if status else ():
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return float(info.retry_delay.ToTimedelta().total_seconds())
    return None


@pytest.fixture(scope="module")
def services(stack: Stack) -> Iterator[dict[str, Any]]:
    token = uuid.uuid4().hex[:8]
    overrides = json.dumps({"user": [0.001, BURST], "email": [0.001, EMAIL_BURST]})
    users = stack.service(
        "users-rl",
        [sys.executable, "-m", "users_service"],
        free_port(),
        {
            **COMMON,
            "MONGODB_DB_NAME": f"rl_u_{token}",
            "ARGON2_MEMORY_KIB": "8192",
            "RATE_LIMIT_OVERRIDES": overrides,
        },
    )
    replicas = [
        stack.service(
            f"promocodes-rl-{n}",
            [sys.executable, "-m", "promocodes_service"],
            free_port(),
            {
                **COMMON,
                "MONGODB_DB_NAME": f"rl_p_{token}",  # two replicas, one database, one Redis
                "USERS_ADDR": users.address,
                "RATE_LIMIT_OVERRIDES": overrides,
            },
        )
        for n in (1, 2)
    ]
    started: list[ServiceProcess] = []
    try:
        for service in (users, *replicas):
            service.start_and_wait()
            started.append(service)
        yield {"users": users, "replicas": replicas}
    finally:
        for service in reversed(started):
            service.terminate()


async def test_a_burst_across_two_replicas_gets_exactly_the_bucket(
    services: dict[str, Any],
) -> None:
    user_id = uuid.uuid4().hex[:24]
    eur = common_pb2.Money(currency_code="EUR", amount_minor=1000)
    one, two = services["replicas"]
    async with one.channel() as first, two.channel() as second:
        stubs = [promo_codes_pb2_grpc.PromoCodeServiceStub(c) for c in (first, second)]

        async def validate(n: int) -> Any:
            try:
                return await stubs[n % 2].ValidatePromoCode(
                    promo_codes_pb2.ValidatePromoCodeRequest(
                        code=f"GUESS{n}", user_id=user_id, order_amount=eur
                    ),
                    timeout=30,
                )
            except grpc.aio.AioRpcError as exc:
                return exc

        outcomes = await asyncio.gather(*(validate(n) for n in range(100)))
    answered = [o for o in outcomes if isinstance(o, promo_codes_pb2.ValidatePromoCodeResponse)]
    refused = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert len(answered) == BURST, Counter(type(o).__name__ for o in outcomes)
    assert all(a.reason == "PROMO_CODE_NOT_FOUND" for a in answered)
    assert len(refused) == 100 - BURST
    for error in refused:
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        info = error_info(error)
        assert info is not None and info.reason == "RATE_LIMITED"
        delay = _retry_delay(error)
        assert delay is not None and delay > 0


async def test_a_login_flood_is_cut_off_while_others_still_log_in(
    services: dict[str, Any],
) -> None:
    users_service: ServiceProcess = services["users"]
    async with users_service.channel(identity="storefront") as channel:
        stub = users_pb2_grpc.UserServiceStub(channel)
        emails = [f"rl.{n}.{uuid.uuid4().hex[:6]}@example.com" for n in range(4)]
        for email in emails:
            await stub.CreateUser(
                users_pb2.CreateUserRequest(
                    user=users_pb2.User(email=email), password="correct horse battery"
                )
            )
        victim, others = emails[0], emails[1:]

        async def attempt(email: str, password: str) -> Any:
            try:
                return await stub.AuthenticateUser(
                    users_pb2.AuthenticateUserRequest(email=email, password=password), timeout=60
                )
            except grpc.aio.AioRpcError as exc:
                return exc

        flood = [attempt(victim, f"guess {n}") for n in range(60)]
        legit = [attempt(email, "correct horse battery") for email in others]
        outcomes = await asyncio.gather(*flood, *legit)
    flooded, logged_in = outcomes[:60], outcomes[60:]
    assert all(isinstance(o, users_pb2.AuthenticateUserResponse) for o in logged_in), logged_in
    reasons = Counter(
        (o.code().name, (error_info(o).reason if error_info(o) else ""))
        for o in flooded
        if isinstance(o, grpc.aio.AioRpcError)
    )
    # At most the email's bucket reached the password check; the rest never cost a hash.
    checked = reasons[("UNAUTHENTICATED", "INVALID_CREDENTIALS")]
    assert 1 <= checked <= EMAIL_BURST, reasons
    limited = (
        reasons[("RESOURCE_EXHAUSTED", "RATE_LIMITED")]
        + reasons[("RESOURCE_EXHAUSTED", "TOO_MANY_FAILURES")]
    )
    assert checked + limited == 60, reasons
    # The account is now locked out: even the right password waits (exponential back-off).
    async with users_service.channel(identity="storefront") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await users_pb2_grpc.UserServiceStub(channel).AuthenticateUser(
                users_pb2.AuthenticateUserRequest(email=victim, password="correct horse battery")
            )
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert _retry_delay(caught.value) is not None


async def test_with_redis_down_log_in_is_refused_and_validation_goes_on(
    services: dict[str, Any], stack: Stack
) -> None:
    """Each limited method's choice while the buckets cannot be read (the services' limits
    tables, `if_store_down`): AuthenticateUser refuses, UNAVAILABLE DEPENDENCY_UNAVAILABLE, at
    once and without hashing; ValidatePromoCode is answered. Log-in works again with Redis."""
    users_service: ServiceProcess = services["users"]
    email = f"rl.down.{uuid.uuid4().hex[:6]}@example.com"
    login = users_pb2.AuthenticateUserRequest(email=email, password="correct horse battery")
    async with users_service.channel(identity="storefront") as channel:
        users = users_pb2_grpc.UserServiceStub(channel)
        await users.CreateUser(
            users_pb2.CreateUserRequest(
                user=users_pb2.User(email=email), password="correct horse battery"
            )
        )
        stack.stop_server("redis")
        try:
            started = asyncio.get_running_loop().time()
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await users.AuthenticateUser(login, timeout=30)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            info = error_info(refused.value)
            assert info is not None and info.reason == "DEPENDENCY_UNAVAILABLE"
            # Refused before the argon2 queue: well under one Redis timeout per attempt.
            assert asyncio.get_running_loop().time() - started < 10

            (replica, _) = services["replicas"]
            async with replica.channel() as promo_channel:  # its per-user bucket is in Redis
                answer = await promo_codes_pb2_grpc.PromoCodeServiceStub(
                    promo_channel
                ).ValidatePromoCode(
                    promo_codes_pb2.ValidatePromoCodeRequest(
                        code="NOSUCHCODE",
                        user_id=uuid.uuid4().hex[:24],
                        order_amount=common_pb2.Money(currency_code="EUR", amount_minor=1000),
                    ),
                    timeout=30,
                )
            assert answer.reason == "PROMO_CODE_NOT_FOUND"  # let through, answered as usual
        finally:
            stack.start_server("redis")

        deadline = asyncio.get_running_loop().time() + 30
        while True:  # the client reconnects on its own; no fixed wait
            try:
                response = await users.AuthenticateUser(login, timeout=30)
                break
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc
                assert asyncio.get_running_loop().time() < deadline, "log-in never came back"
        assert response.user.email == email
