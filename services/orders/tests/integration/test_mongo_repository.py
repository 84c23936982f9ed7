"""MongoOrderRepository against the local stack's MongoDB: the contract of the port."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from orders_service.adapters.event_codec import encode_events
from orders_service.adapters.mongo_repository import MongoOrderRepository
from orders_service.domain.events import PromoCodeSnapshot
from orders_service.domain.model import CONFIRMED, PENDING, REJECTED, Money, Order
from orders_service.domain.ports import (
    DuplicateIdempotencyKey,
    OrderCursor,
    OrderQuery,
    VersionConflict,
)
from promo.v1 import events_pb2
from promo_libs.outbox import decode_envelope
from promo_libs.users import UserSnapshot

NOW = datetime(2026, 3, 4, 5, 6, 7, 123000, tzinfo=UTC)
USER = UserSnapshot("u1", "u1@example.com", "U", True, NOW - timedelta(days=1), None)
PROMO = PromoCodeSnapshot("p1", "SAVE", "PERCENTAGE", basis_points=1000, max_discount_minor=500)


def place(
    order_id: str, key: str, at: datetime = NOW, code: str = "SAVE", user: str = "u1"
) -> Order:
    snapshot = UserSnapshot(user, f"{user}@example.com", "U", True, NOW, None)
    return Order.place(
        order_id, snapshot, Money("EUR", 5000), code, key, at, at + timedelta(seconds=30)
    )


@pytest.fixture
def repo(db: AsyncDatabase[dict[str, Any]]) -> MongoOrderRepository:
    return MongoOrderRepository(db, encode_events)


async def test_round_trip_and_outbox(
    repo: MongoOrderRepository, db: AsyncDatabase[dict[str, Any]]
) -> None:
    order = place("o1", "k1")
    await repo.add(order)
    stored = await repo.get("o1")
    assert stored == order and stored.status == PENDING and stored.sweep_due_at is not None
    assert await repo.get_by_idempotency_key("u1", "k1") == order
    assert await repo.get_by_idempotency_key("u2", "k1") is None
    stored.confirm_redemption("o1", PROMO, Money("EUR", 500), NOW + timedelta(seconds=1))
    await repo.save(stored)
    again = await repo.get("o1")
    assert again == stored and again.status == CONFIRMED and again.promo == PROMO
    assert again.sweep_due_at is None and again.version == 2
    document = await db.orders.find_one({"_id": "o1"})
    assert document is not None and bool(document["outbox_pending"])
    envelopes = [
        events_pb2.EventEnvelope.FromString(decode_envelope(entry))
        for entry in document["outbox"].values()
    ]
    assert sorted((e.type, e.aggregate_version) for e in envelopes) == [
        ("promo.v1.OrderConfirmed", 2),
        ("promo.v1.OrderCreated", 1),
    ]
    confirmed = next(e for e in envelopes if e.HasField("order_confirmed")).order_confirmed
    assert confirmed.order.discount_minor == 500 and confirmed.order.total_minor == 4500
    assert confirmed.promo_code.basis_points == 1000 and confirmed.user.email == "u1@example.com"
    assert confirmed.order.status == 2 and envelopes[0].producer == "orders"


async def test_the_idempotency_key_is_guarded_by_the_index(repo: MongoOrderRepository) -> None:
    results = await asyncio.gather(
        *(repo.add(place(f"o{n}", "same")) for n in range(10)), return_exceptions=True
    )
    assert sum(r is None for r in results) == 1
    assert all(isinstance(r, DuplicateIdempotencyKey) for r in results if r is not None)


async def test_the_same_key_of_two_users_is_two_orders(repo: MongoOrderRepository) -> None:
    await repo.add(place("o1", "same", user="u1"))
    await repo.add(place("o2", "same", user="u2"))
    first = await repo.get_by_idempotency_key("u1", "same")
    second = await repo.get_by_idempotency_key("u2", "same")
    assert first is not None and second is not None
    assert (first.id, second.id) == ("o1", "o2")


async def test_save_is_compare_and_set(repo: MongoOrderRepository) -> None:
    await repo.add(place("o1", "k1"))
    first, second = await repo.get("o1"), await repo.get("o1")
    assert first is not None and second is not None
    first.reject("PROMO_CODE_EXHAUSTED", "p1", NOW, NOW + timedelta(seconds=30))
    await repo.save(first)
    second.confirm_redemption("o1", PROMO, Money("EUR", 1), NOW)
    with pytest.raises(VersionConflict):
        await repo.save(second)
    stored = await repo.get("o1")
    assert stored is not None and stored.status == REJECTED


async def test_listing_is_newest_first_and_stable(repo: MongoOrderRepository) -> None:
    times = [NOW, NOW, NOW + timedelta(seconds=1), NOW + timedelta(seconds=2)]
    for n, at in enumerate(times):
        await repo.add(place(f"o{n}", f"k{n}", at, code="", user="u1" if n < 3 else "u2"))
    page, cursor = await repo.list_page(OrderQuery(), None, 2)
    assert [o.id for o in page] == ["o3", "o2"] and cursor == OrderCursor(times[2], "o2")
    rest, end = await repo.list_page(OrderQuery(), cursor, 2)
    assert [o.id for o in rest] == ["o1", "o0"] and end is None
    mine, _ = await repo.list_page(OrderQuery(user_id="u1", status=CONFIRMED), None, 10)
    assert [o.id for o in mine] == ["o2", "o1", "o0"]
    window, _ = await repo.list_page(
        OrderQuery(created_from=NOW + timedelta(seconds=1), created_until=times[3]), None, 10
    )
    assert [o.id for o in window] == ["o2"]


async def test_due_for_sweep(repo: MongoOrderRepository) -> None:
    await repo.add(place("o1", "k1"))
    await repo.add(place("o2", "k2", code=""))
    assert await repo.due_for_sweep(NOW, 10) == []
    due = await repo.due_for_sweep(NOW + timedelta(seconds=30), 10)
    assert [o.id for o in due] == ["o1"]


async def test_the_campaign_of_the_applied_code_is_stored_and_carried_by_the_events(
    repo: MongoOrderRepository, db: AsyncDatabase[dict[str, Any]]
) -> None:
    order = place("oc1", "kc1")
    await repo.add(order)
    promo = dataclasses.replace(PROMO, campaign_id="camp-1")
    order.confirm_redemption("oc1", promo, Money("EUR", 500), NOW + timedelta(seconds=1))
    await repo.save(order)
    order.cancel("changed", NOW + timedelta(seconds=2))
    await repo.save(order)
    stored = await repo.get("oc1")
    assert stored is not None and stored.campaign_id == "camp-1"
    assert stored.promo is not None and stored.promo.campaign_id == "camp-1"
    document = await db.orders.find_one({"_id": "oc1"})
    assert document is not None and document["campaign_id"] == "camp-1"
    envelopes = {
        e.WhichOneof("payload"): e
        for e in (
            events_pb2.EventEnvelope.FromString(decode_envelope(entry))
            for entry in document["outbox"].values()
        )
    }
    assert envelopes["order_created"].order_created.order.campaign_id == ""  # not applied yet
    for kind in ("order_confirmed", "order_cancelled"):
        payload = getattr(envelopes[kind], kind)
        assert (payload.order.campaign_id, payload.promo_code.campaign_id) == ("camp-1", "camp-1")

    # An order (and its code snapshot) stored before campaigns: no campaign, and it still works.
    await repo.add(place("oc2", "kc2"))
    confirmed = await repo.get("oc2")
    assert confirmed is not None
    confirmed.confirm_redemption("oc2", PROMO, Money("EUR", 500), NOW + timedelta(seconds=1))
    await repo.save(confirmed)
    await db.orders.update_one(
        {"_id": "oc2"}, {"$unset": {"campaign_id": "", "promo.campaign_id": ""}}
    )
    old = await repo.get("oc2")
    assert old is not None and old.campaign_id == "" and old.promo == PROMO
    old.cancel("changed", NOW + timedelta(seconds=2))
    await repo.save(old)
    document = await db.orders.find_one({"_id": "oc2"})
    assert document is not None
    cancelled = [
        e.order_cancelled
        for e in (
            events_pb2.EventEnvelope.FromString(decode_envelope(entry))
            for entry in document["outbox"].values()
        )
        if e.HasField("order_cancelled")
    ]
    assert [c.order.campaign_id for c in cancelled] == [""]
