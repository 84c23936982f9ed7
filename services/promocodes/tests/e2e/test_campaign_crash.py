"""kill -9 of a promocodes replica during a load on one campaign's codes, while a second replica
keeps serving; restart it, load and kill again, then one sweep: the campaign and every code have
counters equal to their ACTIVE usages, nothing over-granted (total, per user), nothing left
pending (I1, I2)."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import grpc
import pytest

from devstack.service import ServiceProcess
from devstack.stack import Stack
from promo.v1 import promo_codes_pb2, promo_codes_pb2_grpc, users_pb2_grpc

from .conftest import create_users, eur, promocodes_process, reason
from .test_campaign_limits import assert_campaign_matches_usages, campaign_with_codes
from .test_promo_crash import _sync_db, sweep

pytestmark = pytest.mark.e2e

pb = promo_codes_pb2
Stub = promo_codes_pb2_grpc.PromoCodeServiceStub
ROUNDS = 2
MAX_USES = 40


async def load(
    services: list[ServiceProcess],
    codes: list[str],
    users: list[str],
    round_no: int,
    stop: asyncio.Event,
) -> dict[str, Any]:
    """24 concurrent clients over both replicas until stopped; the outcome of every id."""
    outcomes: dict[str, Any] = {}
    async with (
        services[0].channel(identity="orders") as first,
        services[1].channel(identity="orders") as second,
    ):
        stubs = [Stub(first), Stub(second)]

        async def client(worker: int) -> None:
            n = 0
            while not stop.is_set():
                rid = f"ck{round_no}-{worker}-{n}"
                n += 1
                request = pb.RedeemPromoCodeRequest(
                    code=random.choice(codes),
                    user_id=random.choice(users),
                    order_amount=eur(1000),
                    redemption_id=rid,
                )
                try:
                    answer = await stubs[worker % 2].RedeemPromoCode(request, timeout=5)
                    outcomes[rid] = (request, answer)
                except grpc.aio.AioRpcError as exc:
                    outcomes[rid] = (request, exc)
                    if exc.code() in (
                        grpc.StatusCode.UNAVAILABLE,
                        grpc.StatusCode.DEADLINE_EXCEEDED,
                    ):
                        return  # its replica is gone

        await asyncio.gather(*(client(w) for w in range(24)))
    return outcomes


async def test_sigkill_of_a_replica_during_campaign_redemptions_then_recovery(
    stack: Stack,
    users_service: ServiceProcess,
    users: users_pb2_grpc.UserServiceStub,
    mongo_db_name: str,
) -> None:
    user_ids = await create_users(users, 60, "campcrash")
    quiet = {"SWEEP_INTERVAL_SECONDS": "3600"}  # only the explicit sweep settles
    victim = promocodes_process(stack, mongo_db_name, users_service.address, quiet)
    await asyncio.to_thread(victim.start_and_wait)
    survivor = promocodes_process(stack, mongo_db_name, users_service.address, quiet)
    await asyncio.to_thread(survivor.start_and_wait)
    try:
        async with victim.channel() as channel:
            campaign, codes = await campaign_with_codes(
                Stub(channel),
                "CAMPCRASH",
                10,
                pb.PromoCode(fixed_amount=eur(100)),
                max_uses=MAX_USES,
                max_uses_per_user=1,
            )
        all_outcomes: dict[str, Any] = {}
        for round_no in range(ROUNDS):
            stop = asyncio.Event()
            task = asyncio.create_task(load([victim, survivor], codes, user_ids, round_no, stop))
            await asyncio.sleep(random.uniform(0.1, 0.6))  # a random moment of the load
            await asyncio.to_thread(victim.kill)
            await asyncio.sleep(0.2)  # the survivor keeps serving meanwhile
            stop.set()
            all_outcomes.update(await task)
            if round_no < ROUNDS - 1:
                # Restarted: it serves the next round beside whatever the kill left behind.
                await asyncio.to_thread(victim.start_and_wait)
        # One sweep (its own process, as an operator runs it) settles every round's leftovers.
        report = await asyncio.to_thread(sweep, victim)
        db = _sync_db(stack, mongo_db_name)
        stored = assert_campaign_matches_usages(db, campaign.id, codes)
        assert stored["uses"] <= MAX_USES

        # Every id retried: a known success stays exactly that success, others get a rule.
        async with survivor.channel(identity="orders") as channel:
            stub = Stub(channel)
            for rid, (request, outcome) in all_outcomes.items():
                try:
                    again = await stub.RedeemPromoCode(request, timeout=10)
                except grpc.aio.AioRpcError as exc:
                    assert exc.code() == grpc.StatusCode.FAILED_PRECONDITION, (rid, exc)
                    assert reason(exc) in ("CAMPAIGN_EXHAUSTED", "CAMPAIGN_PER_USER_LIMIT_REACHED")
                    assert not isinstance(outcome, pb.PromoCodeUsage)
                    continue
                if isinstance(outcome, pb.PromoCodeUsage):
                    assert again == outcome
        stored = assert_campaign_matches_usages(db, campaign.id, codes)
        assert stored["uses"] <= MAX_USES
        print("campaign uses", stored["uses"], "ids", len(all_outcomes), "swept", report)
    finally:
        await asyncio.to_thread(survivor.terminate)
        await asyncio.to_thread(victim.terminate)
