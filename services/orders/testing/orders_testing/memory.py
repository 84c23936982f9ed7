"""In-memory OrderRepository for unit tests: the same contract as the MongoDB one."""

from __future__ import annotations

import copy
from datetime import datetime

from orders_service.domain.events import OrderEvent
from orders_service.domain.model import Order
from orders_service.domain.ports import (
    DuplicateIdempotencyKey,
    OrderCursor,
    OrderQuery,
    OrderRepository,
    VersionConflict,
)
from promo_libs_testing.memory import InMemoryRepository


class InMemoryOrderRepository(InMemoryRepository[Order], OrderRepository):
    def __init__(self) -> None:
        super().__init__()
        self.published: list[OrderEvent] = []  # events that the outbox would hold

    async def get(self, order_id: str) -> Order | None:
        return await self.find_by_id(order_id)

    async def get_by_idempotency_key(self, user_id: str, key: str) -> Order | None:
        for order in self.items.values():
            if (order.user_id, order.idempotency_key) == (user_id, key):
                return copy.deepcopy(order)
        return None

    async def has_confirmed_order(self, user_id: str) -> bool:
        return any(o.user_id == user_id and o.status == "CONFIRMED" for o in self.items.values())

    async def add(self, order: Order) -> None:
        if await self.get_by_idempotency_key(order.user_id, order.idempotency_key) is not None:
            raise DuplicateIdempotencyKey(order.idempotency_key)
        self.published.extend(order.events)
        order.events.clear()
        order.stored_version = order.version
        await self.create(order)

    async def save(self, order: Order) -> None:
        stored = self.items.get(order.id)
        if stored is None or stored.version != order.stored_version:
            raise VersionConflict(order.id)
        self.published.extend(order.events)
        order.events.clear()
        order.stored_version = order.version
        self.items[order.id] = copy.deepcopy(order)

    async def list_page(
        self, query: OrderQuery, after: OrderCursor | None, size: int
    ) -> tuple[list[Order], OrderCursor | None]:
        def wanted(order: Order) -> bool:
            return (
                (not query.user_id or order.user_id == query.user_id)
                and (not query.status or order.status == query.status)
                and (query.created_from is None or order.created_at >= query.created_from)
                and (query.created_until is None or order.created_at < query.created_until)
                and (after is None or (order.created_at, order.id) < _position(after))
            )

        matching = sorted(
            (o for o in self.items.values() if wanted(o)),
            key=lambda o: (o.created_at, o.id),
            reverse=True,
        )
        page = [copy.deepcopy(o) for o in matching[:size]]
        if len(matching) > size and page:
            return page, OrderCursor(page[-1].created_at, page[-1].id)
        return page, None

    async def due_for_sweep(self, now: datetime, limit: int) -> list[Order]:
        due = sorted(
            (o for o in self.items.values() if o.sweep_due_at and o.sweep_due_at <= now),
            key=lambda o: (o.sweep_due_at or now, o.id),
        )
        return [copy.deepcopy(o) for o in due[:limit]]


def _position(cursor: OrderCursor) -> tuple[datetime, str]:
    return cursor.created_at, cursor.order_id
