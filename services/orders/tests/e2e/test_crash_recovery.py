"""Crashes in the middle of a CreateOrder load: PromoCodeService, then OrderService, killed with
SIGKILL and restarted. After the sweeps, every order is CONFIRMED with exactly one active usage,
or REJECTED/CANCELLED with none, and no usage exists without its order."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from devstack.service import ServiceProcess
from devstack.stack import Stack
from promo.v1 import orders_pb2, promo_codes_pb2

from .conftest import (
    Clients,
    Platform,
    eventually,
    new_code,
    new_user,
    order_request,
    orders_of,
    start_platform,
    usages_of,
)

ACTIVE = promo_codes_pb2.PROMO_CODE_USAGE_STATUS_ACTIVE
CONFIRMED = orders_pb2.ORDER_STATUS_CONFIRMED
PENDING = orders_pb2.ORDER_STATUS_PENDING
MAX_USES = 30


@pytest.fixture(scope="module")
def platform(stack: Stack) -> Iterator[Platform]:
    running = start_platform(
        stack,
        "crash",
        orders_env={
            "PROMOCODES_TIMEOUT_SECONDS": "3",
            "USERS_TIMEOUT_SECONDS": "5",
            "SWEEP_STALE_SECONDS": "4",
            "SWEEP_INTERVAL_SECONDS": "0.5",
        },
        promocodes_env={
            "USERS_TIMEOUT_SECONDS": "5",
            "SWEEP_INTERVAL_SECONDS": "0.5",
            "SWEEP_STALE_SECONDS": "2",
        },
    )
    yield running
    running.stop()


async def _load(
    clients: Clients, requests: list[orders_pb2.CreateOrderRequest], done: list[int]
) -> list[Any]:
    """One attempt per order, as a client that gives up on any error would make."""

    async def one(request: orders_pb2.CreateOrderRequest) -> Any:
        try:
            return await clients.orders.CreateOrder(request, timeout=20)
        except grpc.aio.AioRpcError as exc:
            return exc
        finally:
            done[0] += 1

    return await asyncio.gather(*(one(r) for r in requests))


async def _crash_during_load(
    clients: Clients, victim: ServiceProcess, requests: list[orders_pb2.CreateOrderRequest]
) -> list[Any]:
    done = [0]
    load = asyncio.create_task(_load(clients, requests, done))

    async def some_done() -> bool | None:
        return True if done[0] >= len(requests) // 5 else None

    await eventually(some_done, 60, "a fifth of the orders answered", step=0.05)
    victim.kill()
    await asyncio.to_thread(victim.start_and_wait)
    return await load


def _note_final_answer(told: dict[str, int], key: str, answer: Any) -> None:
    """Records what a client was told for good: CONFIRMED, or REJECTED (FAILED_PRECONDITION)."""
    if isinstance(answer, orders_pb2.Order):
        told[key] = answer.status
    elif answer.code() == grpc.StatusCode.FAILED_PRECONDITION:
        told[key] = orders_pb2.ORDER_STATUS_REJECTED


async def _settled(clients: Clients, orders_db: Any) -> None:
    """Waits until the sweeps left nothing PENDING and nothing due."""

    async def clean() -> bool | None:
        pending = await orders_of(clients, status=PENDING)
        due = orders_db.orders.count_documents({"sweep_due_at": {"$lte": 2**62}})
        return True if not pending and due == 0 else None

    await eventually(clean, 90, "every order settled by the sweeps", step=0.5)


async def _check_invariants(
    clients: Clients, user_ids: list[str], promo: promo_codes_pb2.PromoCode
) -> Counter[int]:
    orders = [o for u in user_ids for o in await orders_of(clients, u)]
    by_id = {o.id: o for o in orders}
    usages = await usages_of(clients, promo.id)
    active = [u for u in usages if u.status == ACTIVE]
    assert len(active) <= MAX_USES
    assert len({u.user_id for u in active}) == len(active)  # max_uses_per_user = 1
    orphans = [u.id for u in usages if u.id not in by_id]
    assert not orphans, f"usages without an order: {orphans}"
    confirmed = {o.id for o in orders if o.promo_code == promo.code and o.status == CONFIRMED}
    assert {u.id for u in active} == confirmed, "CONFIRMED <=> exactly one active usage"
    assert all(o.status != PENDING for o in orders)
    return Counter(o.status for o in orders)


async def test_promocodes_killed_during_a_load(
    clients: Clients, platform: Platform, orders_db: Any
) -> None:
    users = await asyncio.gather(*(new_user(clients) for _ in range(40)))
    promo = await new_code(clients, max_uses=MAX_USES, max_uses_per_user=1)
    requests = [order_request(users[n % 40].id, promo.code) for n in range(120)]
    answers = await _crash_during_load(clients, platform.promocodes, requests)
    assert any(isinstance(a, grpc.aio.AioRpcError) for a in answers)
    await _settled(clients, orders_db)
    counts = await _check_invariants(clients, [u.id for u in users], promo)
    assert sum(counts.values()) == len(requests) and counts[CONFIRMED] >= 1


async def test_orders_killed_during_a_load_with_cancellations(
    clients: Clients, platform: Platform, orders_db: Any
) -> None:
    users = await asyncio.gather(*(new_user(clients) for _ in range(40)))
    promo = await new_code(clients, max_uses=MAX_USES, max_uses_per_user=1)
    early = [
        await clients.orders.CreateOrder(order_request(users[n].id, promo.code)) for n in range(10)
    ]
    requests = [order_request(users[n % 40].id, promo.code) for n in range(10, 130)]
    cancels = [
        clients.orders.CancelOrder(orders_pb2.CancelOrderRequest(id=o.id, reason="crash test"))
        for o in early
    ]
    cancelled = asyncio.gather(*cancels, return_exceptions=True)
    answers = await _crash_during_load(clients, platform.orders, requests)
    await cancelled
    assert any(isinstance(a, grpc.aio.AioRpcError) for a in answers)
    told: dict[str, int] = {}  # idempotency key -> the order status a final answer gave
    for request, answer in zip(requests, answers, strict=True):
        _note_final_answer(told, request.idempotency_key, answer)
    # Some clients retry with the same key after the restart; the sweep settles the rest.
    for request in requests[::3]:
        try:
            retried: Any = await clients.orders.CreateOrder(request, timeout=20)
        except grpc.aio.AioRpcError as exc:
            assert exc.code() in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.UNAVAILABLE)
            retried = exc
        _note_final_answer(told, request.idempotency_key, retried)
    await _settled(clients, orders_db)
    counts = await _check_invariants(clients, [u.id for u in users], promo)
    orders = [o for u in users for o in await orders_of(clients, u.id)]
    keys = [o.idempotency_key for o in orders]
    assert len(keys) == len(set(keys)), "two orders under one idempotency key"
    assert set(keys) <= {r.idempotency_key for r in requests} | {o.idempotency_key for o in early}
    # Every request answered for good has its order, in the state its client was told. A request
    # the crash cut off before its order was stored has none: its client got UNAVAILABLE, and
    # only a retry with the same key (as every third client does here) creates it.
    stored = {o.idempotency_key: o.status for o in orders}
    assert {key: stored.get(key) for key in told} == told
    assert len(orders) == sum(counts.values()) >= len(told) + len(early)
    # Every cancellation that was answered is complete.
    for order in early:
        stored = await clients.orders.GetOrder(orders_pb2.GetOrderRequest(id=order.id))
        assert stored.status in (CONFIRMED, orders_pb2.ORDER_STATUS_CANCELLED)
