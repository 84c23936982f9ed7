"""GeneratePromoCodes killed in the middle (issue 12): two promocodes replicas on one database.

Replica P1 generates a batch of 3,000 codes and is SIGKILLed while it is inserting them; none
of the codes it stored may be visible, redeemable or announced on the event stream. The client
retries with the same request_id on replica P2: it gets one whole batch (the same batch id, the
codes P1 drew among them), every code becomes visible at once, and each is announced once.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
import redis

from devstack.ports import free_port
from devstack.service import ServiceProcess
from devstack.stack import Stack
from promo.v1 import common_pb2, promo_codes_pb2, promo_codes_pb2_grpc, users_pb2_grpc
from promo_libs.events import PROMO_CODES_STREAM

from .conftest import create_users, reason

pytestmark = pytest.mark.e2e

COUNT = 3_000  # three insert chunks; the relay publishes ~50 events/s on the stand-in


def eur(amount: int) -> common_pb2.Money:
    return common_pb2.Money(currency_code="EUR", amount_minor=amount)


def replica(stack: Stack, name: str, db_name: str, users_addr: str) -> ServiceProcess:
    return stack.service(
        f"promocodes-gen-{name}",
        [sys.executable, "-m", "promocodes_service"],
        free_port(),
        {
            "METRICS_PORT": "0",
            "MONGODB_DB_NAME": db_name,
            "USERS_ADDR": users_addr,
            "HEALTH_CHECK_INTERVAL_SECONDS": "0.2",
            "SHUTDOWN_GRACE_SECONDS": "2",
            "SWEEP_INTERVAL_SECONDS": "0.5",
        },
    )


@pytest.fixture
def bus(stack: Stack) -> Iterator[redis.Redis]:
    client = redis.Redis(
        host=stack.redis_host, port=stack.redis_port, password=stack.redis_password
    )
    yield client
    client.close()


def announced(bus: redis.Redis, batch_id: str) -> int:
    """PromoCodeCreated events on the stream for codes of the batch (the id is in the snapshot)."""
    marker = batch_id.encode()
    return sum(
        fields[b"type"] == b"promo.v1.PromoCodeCreated" and marker in fields[b"envelope"]
        for _, fields in bus.xrange(PROMO_CODES_STREAM)
    )


async def test_sigkill_mid_generation_leaves_nothing_and_the_retry_completes_it(
    stack: Stack, users_service: ServiceProcess, promo_db: Any, bus: redis.Redis
) -> None:
    db_name = promo_db.name
    p1 = replica(stack, "p1", db_name, users_service.address)
    p2 = replica(stack, "p2", db_name, users_service.address)
    await asyncio.gather(asyncio.to_thread(p1.start_and_wait), asyncio.to_thread(p2.start_and_wait))
    try:
        async with (
            p1.channel() as c1,
            p2.channel() as c2,
            p2.channel(identity="orders") as c2_as_orders,  # only orders may redeem
            users_service.channel() as cu,
        ):
            first = promo_codes_pb2_grpc.PromoCodeServiceStub(c1)
            second = promo_codes_pb2_grpc.PromoCodeServiceStub(c2)
            redeemer = promo_codes_pb2_grpc.PromoCodeServiceStub(c2_as_orders)
            request, batch = await _killed_mid_generation(p1, first, promo_db)
            staged = [d["code"] for d in promo_db.promo_codes.find({"batch_id": batch})]
            assert 0 < len(staged) < COUNT

            # Nothing of the dead attempt exists for anyone.
            listed = await second.ListPromoCodes(
                promo_codes_pb2.ListPromoCodesRequest(batch_id=batch, page_size=10)
            )
            assert list(listed.promo_codes) == []
            users = users_pb2_grpc.UserServiceStub(cu)
            (user_id,) = await create_users(users, 1, f"gen{uuid.uuid4().hex[:8]}")
            for code in staged[:3]:
                check = await second.ValidatePromoCode(
                    promo_codes_pb2.ValidatePromoCodeRequest(
                        code=code, user_id=user_id, order_amount=eur(1000)
                    )
                )
                assert not check.applicable and check.reason == "PROMO_CODE_NOT_FOUND"
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await redeemer.RedeemPromoCode(
                        promo_codes_pb2.RedeemPromoCodeRequest(
                            code=code,
                            user_id=user_id,
                            order_amount=eur(1000),
                            redemption_id=uuid.uuid4().hex,
                        )
                    )
                assert reason(refused.value) == "PROMO_CODE_NOT_FOUND"
            assert announced(bus, batch) == 0  # no ghost codes downstream

            # The client's retry, on the other replica: the same batch, whole.
            done = await second.GeneratePromoCodes(request, timeout=120)
            assert done.batch_id == batch
            assert len(done.codes) == len(set(done.codes)) == COUNT
            assert set(staged) <= set(done.codes)
            live = promo_db.promo_codes.count_documents(
                {"batch_id": batch, "staged": {"$exists": False}}
            )
            assert live == COUNT
            usage = await redeemer.RedeemPromoCode(
                promo_codes_pb2.RedeemPromoCodeRequest(
                    code=staged[0],
                    user_id=user_id,
                    order_amount=eur(1000),
                    redemption_id=uuid.uuid4().hex,
                )
            )
            assert usage.code == staged[0]
            again = await second.GeneratePromoCodes(request, timeout=120)
            assert (again.batch_id, list(again.codes)) == (batch, list(done.codes))

            give_up = time.monotonic() + 300
            while (seen := announced(bus, batch)) < COUNT:
                assert time.monotonic() < give_up, f"{seen} of {COUNT} codes announced"
                await asyncio.sleep(0.5)
            assert seen == COUNT  # each code once: nothing twice
    finally:
        for process in (p1, p2):
            await asyncio.to_thread(process.terminate)


async def _killed_mid_generation(
    p1: ServiceProcess, stub: promo_codes_pb2_grpc.PromoCodeServiceStub, promo_db: Any
) -> tuple[promo_codes_pb2.GeneratePromoCodesRequest, str]:
    """Starts a generation on P1 and SIGKILLs P1 once some, not all, of its codes are stored."""
    for _ in range(5):
        request = promo_codes_pb2.GeneratePromoCodesRequest(
            prefix=f"G{uuid.uuid4().hex[:4]}-",
            count=COUNT,
            template=promo_codes_pb2.PromoCode(fixed_amount=eur(500), max_uses=1),
            request_id=uuid.uuid4().hex,
        )
        call = asyncio.ensure_future(stub.GeneratePromoCodes(request, timeout=120))
        give_up = time.monotonic() + 60
        batch: dict[str, Any] | None = None
        while time.monotonic() < give_up and not call.done():
            batch = promo_db.promo_code_batches.find_one({"_id": request.request_id})
            if batch is not None and promo_db.promo_codes.count_documents(
                {"batch_id": batch["batch_id"]}
            ):
                break
            await asyncio.sleep(0.02)
        await asyncio.to_thread(p1.kill)
        await asyncio.gather(call, return_exceptions=True)
        batch = promo_db.promo_code_batches.find_one({"_id": request.request_id})
        if batch is not None and batch["state"] == "BUILDING":
            return request, str(batch["batch_id"])
        await asyncio.to_thread(p1.start_and_wait)  # finished before the kill: again
    raise AssertionError("no SIGKILL landed inside a generation")
