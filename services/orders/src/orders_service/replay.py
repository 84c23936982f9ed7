"""`python -m orders_service replay --stream NAME`: the orders' current state as events (I6).

Reads only this service's database (an order stores the user and promo-code snapshots it was
placed with). One event per order, the one its status was reached by (OrderCreated while
PENDING, OrderConfirmed, OrderRejected, OrderCancelled), with its current snapshot and version.
"""

from __future__ import annotations

from collections.abc import Sequence

from pymongo.asynchronous.database import AsyncDatabase

from orders_service.adapters.event_codec import encode_events
from orders_service.adapters.mongo_repository import MongoOrderRepository
from orders_service.domain.events import (
    OrderCancelled,
    OrderConfirmed,
    OrderCreated,
    OrderEvent,
    OrderRejected,
)
from orders_service.domain.model import CANCELLED, CONFIRMED, REJECTED
from promo_libs import replay
from promo_libs.outbox import OutboxEntry


def sources(db: AsyncDatabase[replay.Document]) -> Sequence[replay.Source]:
    repository = MongoOrderRepository(db, encode_events)

    async def to_entries(document: replay.Document) -> list[OutboxEntry]:
        order = repository.from_document(document)
        snapshot, user, at, version = order.snapshot(), order.user, order.updated_at, order.version
        event: OrderEvent
        if order.status == CONFIRMED:
            event = OrderConfirmed(snapshot, user, order.promo, version, at)
        elif order.status == CANCELLED:
            event = OrderCancelled(snapshot, user, order.promo, version, at)
        elif order.status == REJECTED:
            event = OrderRejected(snapshot, user, version, at)
        else:
            event = OrderCreated(snapshot, user, version, at)
        return encode_events([event])

    return [replay.Source(MongoOrderRepository.collection_name, to_entries)]
