"""kill -9 of a promocodes replica during a load on one campaign's codes, while a second replica
keeps serving; restart it, load and kill again, then one sweep: the campaign and every code have
counters equal to their ACTIVE usages, nothing over-granted (total, per user), nothing left
pending (I1, I2). The victim is frozen just before each kill so that the test can count the
redemptions the kill cut between their steps, and fails if none was: the recovery must have
had something to recover."""

from __future__ import annotations

import asyncio
import os
import random
import signal
from collections.abc import Callable
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
MAX_ROUNDS = 5  # more only while no kill has cut a redemption between its steps yet
MAX_USES = 100  # not reached during the rounds: every kill may cut redemptions mid-way


async def load(
    services: list[ServiceProcess],
    codes: list[str],
    users: list[str],
    round_no: int,
    stop: asyncio.Event,
    outcomes: dict[str, Any],
) -> None:
    """24 concurrent clients over both replicas until stopped; the outcome of every id (ids of
    even workers went to the first replica)."""
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
                    answer = await stubs[worker % 2].RedeemPromoCode(request, timeout=3)
                    outcomes[rid] = (request, answer)
                except grpc.aio.AioRpcError as exc:
                    outcomes[rid] = (request, exc)
                    if exc.code() in (
                        grpc.StatusCode.UNAVAILABLE,
                        grpc.StatusCode.DEADLINE_EXCEEDED,
                    ):
                        return  # its replica is gone

        await asyncio.gather(*(client(w) for w in range(24)))


async def test_sigkill_of_a_replica_during_campaign_redemptions_then_recovery(
    stack: Stack,
    users_service: ServiceProcess,
    users: users_pb2_grpc.UserServiceStub,
    mongo_db_name: str,
) -> None:
    user_ids = await create_users(users, 120, "campcrash")
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
        db = _sync_db(stack, mongo_db_name)
        cut = 0  # reservations the killed replica left behind, over all rounds
        for round_no in range(MAX_ROUNDS):
            outcomes = await _kill_during_load([victim, survivor], codes, user_ids, round_no)
            all_outcomes.update(outcomes)
            cut += _pending(db)  # the victim's requests cut mid-protocol, before the kill
            await asyncio.to_thread(victim.kill)
            if round_no + 1 >= ROUNDS and cut > 0:
                break
            # Restarted: it serves the next round beside whatever the kill left behind.
            await asyncio.to_thread(victim.start_and_wait)
        assert cut > 0, "no kill cut a redemption between its steps"
        # One sweep (its own process, as an operator runs it) settles every round's leftovers.
        report = await asyncio.to_thread(sweep, victim)
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
        print("campaign uses", stored["uses"], "ids", len(all_outcomes), "cut", cut, report)
    finally:
        await asyncio.to_thread(survivor.terminate)
        await asyncio.to_thread(victim.terminate)


def _pending(db: Any) -> int:
    """Reservations held on the campaigns and codes of the database."""
    held = 0
    for collection in (db.campaigns, db.promo_codes):
        for document in collection.find({"pending_count": {"$gt": 0}}, {"pending": 1}):
            held += len(document.get("pending") or {})
    return held


async def _until(condition: Callable[[], bool], within: float) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def _kill_during_load(
    services: list[ServiceProcess], codes: list[str], users: list[str], round_no: int
) -> dict[str, Any]:
    """Runs the load and freezes the first replica at a random moment of it (SIGSTOP: its
    requests stop mid-protocol, as at a kill -9, which follows once what it left is counted);
    returns when the second replica's requests are done."""
    stop = asyncio.Event()
    outcomes: dict[str, Any] = {}
    task = asyncio.create_task(load(services, codes, users, round_no, stop, outcomes))
    await _until(lambda: len(outcomes) >= 12, within=20)  # both replicas really serving
    await asyncio.sleep(random.uniform(0, 0.3))
    child = services[0].child
    assert child is not None and child.pid is not None
    os.kill(child.pid, signal.SIGSTOP)
    await asyncio.sleep(0.2)  # the survivor keeps serving meanwhile
    stop.set()
    await task
    return outcomes
