"""Two orders replicas and two promocodes replicas against the same stores (issue 12, "Two
replicas"), each a real process; faults are cut inside a CreateOrder (a promocodes replica
stopped while a Redeem is in flight, one killed while redemptions hold reservations)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pymongo
import pytest

from devstack.service import ServiceProcess
from devstack.stack import Stack
from promo.v1 import (
    orders_pb2,
    promo_codes_pb2,
    promo_codes_pb2_grpc,
)
from promo_libs.grpc.errors import error_info

from .conftest import (
    Clients,
    clients_of,
    eur,
    eventually,
    new_code,
    new_user,
    order_request,
    start_replicas,
)

pytestmark = pytest.mark.e2e

ACTIVE = promo_codes_pb2.PROMO_CODE_USAGE_STATUS_ACTIVE
REJECTED = orders_pb2.ORDER_STATUS_REJECTED
CONFIRMED = orders_pb2.ORDER_STATUS_CONFIRMED
PENDING = orders_pb2.ORDER_STATUS_PENDING
HOLDERS = 40


def _signal(service: ServiceProcess, sig: signal.Signals) -> None:
    assert service.child is not None and service.child.pid is not None
    os.killpg(service.child.pid, sig)


@pytest.fixture
def mongo(stack: Stack) -> Iterator[Any]:
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(stack.mongo_uri)
    yield client
    client.close()


def assert_counters_match_usages(db: Any, promo_id: str) -> None:
    code = db.promo_codes.find_one({"_id": promo_id})
    active = list(db.promo_code_usages.find({"promo_id": promo_id, "status": "ACTIVE"}))
    assert code["pending"] == {} and code["pending_count"] == 0
    assert code["uses"] == len(active), (code["uses"], [u["_id"] for u in active])
    assert code["discount_granted"] == sum(u["discount"] for u in active)


async def _settled(db: Any, promo_id: str) -> bool | None:
    code = await asyncio.to_thread(db.promo_codes.find_one, {"_id": promo_id})
    return True if code["pending_count"] == 0 else None


async def _hold_the_bulkhead(
    clients: Clients, orders_db: Any, user_id: str, code: str
) -> list[asyncio.Future[Any]]:
    """HOLDERS orders with a code, sent at once; returns when each is placed (PENDING), i.e.
    holds the bulkhead or waits for it."""
    holders = [
        asyncio.ensure_future(clients.orders.CreateOrder(order_request(user_id, code), timeout=120))
        for _ in range(HOLDERS)
    ]

    async def queued() -> bool | None:
        placed = await asyncio.to_thread(
            orders_db.orders.count_documents, {"user_id": user_id, "status": "PENDING"}
        )
        return True if placed == HOLDERS else None

    await eventually(queued, 60, "every holder placed and redeeming")
    return holders


async def _refused_as_voided(
    replica: ServiceProcess, late: promo_codes_pb2.RedeemPromoCodeRequest
) -> None:
    """The id is void: a Redeem with it, sent as orders (the only caller the policy lets
    redeem), is refused, every time."""
    async with replica.channel(identity="orders") as channel:
        stub = promo_codes_pb2_grpc.PromoCodeServiceStub(channel)
        for _ in range(2):
            with pytest.raises(grpc.aio.AioRpcError) as voided:
                await stub.RedeemPromoCode(late, timeout=10)
            info = error_info(voided.value)
            assert voided.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert info is not None and info.reason == "REDEMPTION_VOIDED"


async def _all_settled(orders_db: Any, promo_db: Any, promo_ids: list[str]) -> None:
    """Once no order is PENDING and no reservation in flight: counters equal usages."""

    async def no_pending_orders() -> bool | None:
        left = await asyncio.to_thread(orders_db.orders.count_documents, {"status": "PENDING"})
        return True if left == 0 else None

    await eventually(no_pending_orders, 60, "every order settled")
    for promo_id in promo_ids:
        await eventually(lambda p=promo_id: _settled(promo_db, p), 30, "no reservation")
        assert_counters_match_usages(promo_db, promo_id)


async def test_a_redeem_stuck_behind_the_bulkhead_leaks_no_use_after_another_replica_rejected(
    stack: Stack, mongo: Any
) -> None:
    """Issue 12's scenario. R1 has one bulkhead slot; its promocodes replica P1 is stopped, so
    the slot is held by calls that hang, and an order O1 (code B, whose one use is taken by O2)
    queues behind them while its caller gives up. R2's sweep redeems O1 through P2, is refused
    (exhausted) and rejects it; O2 is cancelled (B's use comes back); R2's recheck releases
    O1's id. P1 resumes. Before the fix R1 then redeemed O1 at last -- B was free again -- and
    could not save the outcome (the handler's deadline had passed), so nothing gave the use
    back: an ACTIVE usage for a REJECTED order. Now O1's Redeem never starts after its caller's
    deadline, and a Redeem with O1's id would be refused anyway (the release voided it)."""
    replicas = start_replicas(
        stack,
        "leak",
        # R1's own sweep is off: R2 is the replica that takes O1 over.
        r1_env={
            "PROMOCODES_MAX_IN_FLIGHT": "1",
            "PROMOCODES_TIMEOUT_SECONDS": "2.5",
            "SWEEP_STALE_SECONDS": "3",
            "SWEEP_INTERVAL_SECONDS": "3600",
        },
        r2_env={
            "PROMOCODES_TIMEOUT_SECONDS": "2",
            "SWEEP_STALE_SECONDS": "3",
            "SWEEP_INTERVAL_SECONDS": "0.3",
        },
    )
    promo_db = mongo[replicas.promocodes_db]
    orders_db = mongo[replicas.orders_db]
    stopped = False
    try:
        async with (
            replicas.users.channel() as u,
            replicas.p2.channel() as p2,
            replicas.r1.channel() as r1_channel,
            replicas.r2.channel() as r2_channel,
        ):
            via_r1, via_r2 = clients_of(u, p2, r1_channel), clients_of(u, p2, r2_channel)
            u1, u2, u3 = [await new_user(via_r2) for _ in range(3)]
            code_a = await new_code(via_r2)
            code_b = await new_code(via_r2, max_uses=1)
            o2 = await via_r2.orders.CreateOrder(order_request(u2.id, code_b.code), timeout=30)
            assert o2.status == CONFIRMED

            _signal(replicas.p1, signal.SIGSTOP)
            stopped = True
            # Calls that hold R1's one slot while P1 does not answer (each for R1's 2.5 s),
            # longer than the whole scenario takes when they are served one after the other.
            holders = await _hold_the_bulkhead(via_r1, orders_db, u3.id, code_a.code)
            o1_request = order_request(u1.id, code_b.code)
            with pytest.raises(grpc.aio.AioRpcError) as gave_up:
                await via_r1.orders.CreateOrder(o1_request, timeout=1.5)
            assert gave_up.value.code() in (
                grpc.StatusCode.DEADLINE_EXCEEDED,
                grpc.StatusCode.UNAVAILABLE,
            )
            o1 = await asyncio.to_thread(
                orders_db.orders.find_one, {"idempotency_key": o1_request.idempotency_key}
            )
            o1_id = o1["_id"]

            async def o1_rejected() -> orders_pb2.Order | None:
                order = await via_r2.orders.GetOrder(orders_pb2.GetOrderRequest(id=o1_id))
                return order if order.status == REJECTED else None

            rejected = await eventually(o1_rejected, 60, "R2's sweep rejects O1")
            assert rejected.rejection_reason == "PROMO_CODE_EXHAUSTED"
            await via_r2.orders.CancelOrder(
                orders_pb2.CancelOrderRequest(id=o2.id, reason="changed my mind"), timeout=30
            )

            async def o1_rechecked() -> bool | None:
                doc = await asyncio.to_thread(orders_db.orders.find_one, {"_id": o1_id})
                return True if doc.get("sweep_due_at") is None else None

            await eventually(o1_rechecked, 60, "R2's recheck releases O1's id")

            _signal(replicas.p1, signal.SIGCONT)
            stopped = False
            await asyncio.gather(*holders, return_exceptions=True)
            # A barrier: R1's bulkhead is first come, first served, so once this order (queued
            # after O1's attempt) is answered, O1's attempt has had its turn, if it was waiting.
            barrier = await via_r1.orders.CreateOrder(
                order_request(u3.id, code_a.code), timeout=120
            )
            assert barrier.status == CONFIRMED

            usages = list(promo_db.promo_code_usages.find({"promo_id": code_b.id}))
            leaked = [x["_id"] for x in usages if x["status"] == "ACTIVE"]
            assert leaked == [], f"ACTIVE usages of B for no CONFIRMED order: {leaked}"
            final = await via_r2.orders.GetOrder(orders_pb2.GetOrderRequest(id=o1_id))
            assert final.status == REJECTED

            late = promo_codes_pb2.RedeemPromoCodeRequest(
                code=code_b.code, user_id=u1.id, order_amount=eur(5000), redemption_id=o1_id
            )
            await _refused_as_voided(replicas.p2, late)

            await _all_settled(orders_db, promo_db, [code_a.id, code_b.id])
    finally:
        if stopped:
            _signal(replicas.p1, signal.SIGCONT)
        for service in replicas.all():
            await asyncio.to_thread(service.terminate)


async def _leave_a_reservation(
    p1: ServiceProcess, promo_db: Any, code: promo_codes_pb2.PromoCode, user_ids: list[str]
) -> None:
    """Redeems on P1 with many clients and SIGKILLs it inside the load, until a reservation of
    the code is left without its request (what a killed replica leaves)."""
    for round_no in range(20):
        stop = asyncio.Event()

        async def client(
            worker: int,
            stub: promo_codes_pb2_grpc.PromoCodeServiceStub,
            stop: asyncio.Event,
            round_no: int,
        ) -> None:
            n = 0
            while not stop.is_set():
                n += 1
                request = promo_codes_pb2.RedeemPromoCodeRequest(
                    code=code.code,
                    user_id=user_ids[(worker + n) % len(user_ids)],
                    order_amount=eur(5000),
                    redemption_id=f"kill{round_no}x{worker}x{n}",
                )
                try:
                    await stub.RedeemPromoCode(request, timeout=5)
                except grpc.aio.AioRpcError:
                    return

        if not p1.running:
            await asyncio.to_thread(p1.start_and_wait)
        async with p1.channel(identity="orders") as channel:  # only orders may redeem
            stub = promo_codes_pb2_grpc.PromoCodeServiceStub(channel)
            load = asyncio.gather(*(client(w, stub, stop, round_no) for w in range(16)))
            await asyncio.sleep(0.2 + 0.1 * (round_no % 5))  # a moment inside the load
            await asyncio.to_thread(p1.kill)
            stop.set()
            await load
        stored = await asyncio.to_thread(promo_db.promo_codes.find_one, {"_id": code.id})
        if stored["pending"]:
            return
    raise AssertionError("no SIGKILL in 20 left a reservation behind")


async def test_one_stale_reservation_neither_delays_its_code_nor_starves_others(
    stack: Stack, mongo: Any
) -> None:
    """A promocodes replica is killed while it holds a reservation of code C; the code is then
    full. Orders for C through both orders replicas (the default 6 s PromoCodeService timeout,
    a bulkhead of 4) must get a definite answer -- PROMO_CODE_EXHAUSTED, or CONFIRMED for the
    use the dead reservation gives back, within the dead request's own deadline (5 s) at
    worst -- and orders for code D, sharing the bulkheads, must all be CONFIRMED. Before the
    fix every C order waited for the dead reservation longer than its deadline (UNAVAILABLE,
    order left PENDING) and held a slot meanwhile, so D's orders timed out behind them."""
    orders_env = {"PROMOCODES_MAX_IN_FLIGHT": "4", "SWEEP_INTERVAL_SECONDS": "3600"}
    replicas = start_replicas(stack, "stale", orders_env, orders_env)
    promo_db = mongo[replicas.promocodes_db]
    try:
        async with (
            replicas.users.channel() as u,
            replicas.p2.channel() as p2,
            replicas.r1.channel() as r1_channel,
            replicas.r2.channel() as r2_channel,
        ):
            via_r1, via_r2 = clients_of(u, p2, r1_channel), clients_of(u, p2, r2_channel)
            users = [await new_user(via_r2) for _ in range(12)]
            code_c = await new_code(via_r2, max_uses=1_000_000)
            code_d = await new_code(via_r2)
            await _leave_a_reservation(replicas.p1, promo_db, code_c, [x.id for x in users])
            # R1's promocodes replica is restarted (a new pod); the reservation stays stale.
            await asyncio.to_thread(replicas.p1.start_and_wait)
            # R1 has reconnected to it (it reports NOT_SERVING while its dependency is down).
            await asyncio.to_thread(replicas.r1.wait_status, "SERVING", 30)
            stored = promo_db.promo_codes.find_one({"_id": code_c.id})
            full = promo_codes_pb2.PromoCode(id=code_c.id, max_uses=stored["uses"])
            await via_r2.codes.UpdatePromoCode(
                promo_codes_pb2.UpdatePromoCodeRequest(
                    promo_code=full, update_mask={"paths": ["max_uses"]}
                ),
                timeout=10,
            )

            async def one(clients: Clients, user: str, code: str) -> tuple[str, float]:
                started = time.monotonic()
                try:
                    order = await clients.orders.CreateOrder(order_request(user, code), timeout=15)
                    outcome = orders_pb2.OrderStatus.Name(order.status)
                except grpc.aio.AioRpcError as exc:
                    info = error_info(exc)
                    outcome = f"{exc.code().name}:{info.reason if info else ''}"
                return outcome, time.monotonic() - started

            calls = [
                one(via_r1 if n % 2 else via_r2, users[n % len(users)].id, code)
                for n in range(24)
                for code in (code_c.code, code_d.code)
            ]
            results = await asyncio.gather(*calls)
            for_c, for_d = results[0::2], results[1::2]
            c_outcomes = sorted({o for o, _ in for_c})
            assert set(c_outcomes) <= {
                "ORDER_STATUS_CONFIRMED",
                "FAILED_PRECONDITION:PROMO_CODE_EXHAUSTED",
            }, c_outcomes
            assert sum(o == "ORDER_STATUS_CONFIRMED" for o, _ in for_c) <= len(stored["pending"])
            assert {o for o, _ in for_d} == {"ORDER_STATUS_CONFIRMED"}, [o for o, _ in for_d]
            slowest = max(t for _, t in results)
            print(f"slowest order {slowest:.2f}s")
            await eventually(lambda: _settled(promo_db, code_c.id), 30, "no reservation of C")
            assert_counters_match_usages(promo_db, code_c.id)
            assert_counters_match_usages(promo_db, code_d.id)
    finally:
        for service in replicas.all():
            await asyncio.to_thread(service.terminate)
