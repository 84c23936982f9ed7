"""How many MongoDB round trips CreateOrder costs in the order service, counted on the client
(README, Benchmarks). The use case on the real MongoDB repository; UserService and
PromoCodeService are fakes here (their own round trips are counted in their own tests).
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest_asyncio
from pymongo import AsyncMongoClient

from devstack.query_plans import collection_scans
from devstack.stack import Stack
from orders_service.adapters.event_codec import encode_events
from orders_service.adapters.migrations import MIGRATIONS
from orders_service.adapters.mongo_repository import MongoOrderRepository
from orders_service.domain.commands import CreateOrder
from orders_service.domain.events import PromoCodeSnapshot
from orders_service.domain.model import CONFIRMED, Money
from orders_service.domain.ports import (
    PromoCodes,
    Redeemed,
    RedeemOutcome,
    Redemption,
)
from orders_service.service_layer.orders import Orders
from promo_libs.mongo.migrations import apply_migrations
from promo_libs.mongo.monitoring import CommandCounter
from promo_libs.users import UserDirectory, UserSnapshot

# Has the user a confirmed order (first-order codes), insert the order, confirm it. It was 5:
# the order was looked up by its key first, and the confirmation read back.
CREATE_ORDER_ROUND_TRIPS = 3


class Users(UserDirectory):
    async def get_user(self, user_id: str) -> UserSnapshot | None:
        return UserSnapshot(user_id, f"{user_id}@example.com", "U", True, None, None)

    async def ping(self) -> bool:
        return True


class Codes(PromoCodes):
    async def redeem(self, redemption: Redemption) -> RedeemOutcome:
        promo = PromoCodeSnapshot("p1", redemption.code, "FIXED_AMOUNT", fixed_amount_minor=100)
        return Redeemed(redemption.redemption_id, "p1", redemption.code, Money("EUR", 100), promo)

    async def release(self, redemption_id: str, reason: str) -> bool:
        return True


@pytest_asyncio.fixture(loop_scope="session")
async def counted(
    stack: Stack, mongo_db_name: str
) -> AsyncIterator[tuple[CommandCounter, Orders, AsyncMongoClient[dict[str, Any]]]]:
    counter = CommandCounter()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        stack.mongo_uri, tz_aware=True, event_listeners=[counter]
    )
    try:
        db = client[mongo_db_name]
        await apply_migrations(db, MIGRATIONS)
        ids = itertools.count(1)

        def clock() -> datetime:
            now = datetime.now(UTC)
            return now.replace(microsecond=now.microsecond // 1000 * 1000)

        orders = Orders(
            MongoOrderRepository(db, encode_events),
            Users(),
            Codes(),
            lambda: f"o{next(ids):06d}",
            clock,
            timedelta(seconds=30),
        )
        yield counter, orders, client
    finally:
        await client.close()


async def test_create_order_with_a_code_costs_three_round_trips_in_the_order_service(
    counted: tuple[CommandCounter, Orders, AsyncMongoClient[dict[str, Any]]],
) -> None:
    counter, orders, client = counted

    def command(key: str) -> CreateOrder:
        return CreateOrder("u1", "EUR", 5000, "SAVE", key)

    await orders.create_order(command(uuid.uuid4().hex))  # warm-up
    counter.reset()
    key = uuid.uuid4().hex
    order = await orders.create_order(command(key))
    print(f"CreateOrder (orders service): {counter.total} round trips {dict(counter.counts)}")
    assert order.status == CONFIRMED and order.promo is not None
    assert counter.total == CREATE_ORDER_ROUND_TRIPS, dict(counter.counts)
    # Each of them through an index: a scan grows with the collection (it did: the first-order
    # check read every order on the stand-in).
    assert await collection_scans(client, counter.commands) == []
    counter.reset()
    again = await orders.create_order(command(key))
    print(f"CreateOrder replayed: {counter.total} round trips {dict(counter.counts)}")
    assert again.id == order.id and again.status == CONFIRMED
