"""SIGKILL the promocodes process at random moments during a redemption load, restart it, run
recovery: counters equal usages, nothing over-granted, nothing left pending (I1 and I2)."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
from typing import Any

import grpc
import pytest

from devstack.service import ServiceProcess
from devstack.stack import Stack
from promo.v1 import common_pb2, promo_codes_pb2, promo_codes_pb2_grpc, users_pb2_grpc

from .conftest import (
    assert_counters_match_usages,
    create_users,
    promocodes_process,
    reason,
)

pytestmark = pytest.mark.e2e

ROUNDS = 4


def eur(amount: int) -> common_pb2.Money:
    return common_pb2.Money(currency_code="EUR", amount_minor=amount)


async def load(
    service: ServiceProcess, code: str, users: list[str], round_no: int, stop: asyncio.Event
) -> dict[str, Any]:
    """Redeems with 24 concurrent clients until stopped; returns the outcome of every id."""
    outcomes: dict[str, Any] = {}
    async with service.channel(identity="orders") as channel:
        stub = promo_codes_pb2_grpc.PromoCodeServiceStub(channel)

        async def client(worker: int) -> None:
            n = 0
            while not stop.is_set():
                rid = f"k{round_no}-{worker}-{n}"
                n += 1
                request = promo_codes_pb2.RedeemPromoCodeRequest(
                    code=code,
                    user_id=random.choice(users),
                    order_amount=eur(1000),
                    redemption_id=rid,
                )
                try:
                    outcomes[rid] = (request, await stub.RedeemPromoCode(request, timeout=5))
                except grpc.aio.AioRpcError as exc:
                    outcomes[rid] = (request, exc)
                    if exc.code() in (
                        grpc.StatusCode.UNAVAILABLE,
                        grpc.StatusCode.DEADLINE_EXCEEDED,
                    ):
                        return  # the server is gone

        await asyncio.gather(*(client(w) for w in range(24)))
    return outcomes


def sweep(service: ServiceProcess) -> dict[str, int]:
    done = subprocess.run(
        [sys.executable, "-m", "promocodes_service", "sweep", "--stale-seconds", "0"],
        env=service.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    report: dict[str, int] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


async def test_sigkill_during_redemptions_then_recovery(
    stack: Stack,
    users_service: ServiceProcess,
    users: users_pb2_grpc.UserServiceStub,
    mongo_db_name: str,
    mongo_client: Any,
) -> None:
    user_ids = await create_users(users, 30, "crash")
    service = promocodes_process(
        stack, mongo_db_name, users_service.address, {"SWEEP_INTERVAL_SECONDS": "3600"}
    )
    await asyncio.to_thread(service.start_and_wait)
    try:
        async with service.channel() as channel:
            created = await promo_codes_pb2_grpc.PromoCodeServiceStub(channel).CreatePromoCode(
                promo_codes_pb2.CreatePromoCodeRequest(
                    promo_code=promo_codes_pb2.PromoCode(
                        code="CRASH", fixed_amount=eur(100), max_uses=45, max_uses_per_user=2
                    )
                )
            )
        all_outcomes: dict[str, Any] = {}
        recovered = {"finalized": 0, "rolled_back": 0}
        for round_no in range(ROUNDS):
            stop = asyncio.Event()
            task = asyncio.create_task(load(service, "CRASH", user_ids, round_no, stop))
            await asyncio.sleep(random.uniform(0.05, 0.5))  # a random moment of the load
            await asyncio.to_thread(service.kill)
            stop.set()
            all_outcomes.update(await task)
            await asyncio.to_thread(service.start_and_wait)
            report = await asyncio.to_thread(sweep, service)
            for key in recovered:
                recovered[key] += report[key]
        sync_db = _sync_db(stack, mongo_db_name)
        assert_counters_match_usages(sync_db, created.id)

        # Every id whose outcome the client never learned, retried: the stored answer or a rule.
        async with service.channel(identity="orders") as channel:
            stub = promo_codes_pb2_grpc.PromoCodeServiceStub(channel)
            for rid, (request, outcome) in all_outcomes.items():
                try:
                    again = await stub.RedeemPromoCode(request, timeout=10, wait_for_ready=True)
                except grpc.aio.AioRpcError as exc:
                    assert exc.code() == grpc.StatusCode.FAILED_PRECONDITION, (
                        rid,
                        exc,
                        service.running,
                        service.log_tail(30),
                    )
                    assert reason(exc) in ("PROMO_CODE_EXHAUSTED", "PER_USER_LIMIT_REACHED")
                    assert not isinstance(outcome, promo_codes_pb2.PromoCodeUsage)
                    continue
                if isinstance(outcome, promo_codes_pb2.PromoCodeUsage):
                    assert again == outcome  # a known success stays exactly that success
        code = assert_counters_match_usages(sync_db, created.id)
        assert code["uses"] <= 45
        print("recovered", recovered, "uses", code["uses"])
    finally:
        await asyncio.to_thread(service.terminate)


def _sync_db(stack: Stack, name: str) -> Any:
    import pymongo

    return pymongo.MongoClient(stack.mongo_uri, tz_aware=True)[name]
