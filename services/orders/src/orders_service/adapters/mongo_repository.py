"""OrderRepository on MongoDB: collection `orders`, one document per order.

- Idempotency is the unique index on (`user_id`, `idempotency_key`): the insert decides between
  concurrent requests, never a read before it (an upsert would not: the local stand-in does not
  raise on a colliding upsert).
- Every change is a compare-and-set on `version` that carries the change's events (outbox).
- Moments are epoch milliseconds (promo_libs.mongo.times says why); booleans are read through
  bool() because the stand-in returns 1/0 after a `$set`.
- Listing is keyset pagination on (created_at, _id), both descending.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from pymongo import DESCENDING
from pymongo.errors import DuplicateKeyError

from orders_service.domain.events import OrderEvent, OrderLine, PromoCodeSnapshot
from orders_service.domain.model import CONFIRMED, Money, Order
from orders_service.domain.ports import (
    DuplicateIdempotencyKey,
    OrderCursor,
    OrderQuery,
    OrderRepository,
    VersionConflict,
)
from promo_libs.mongo.connection import Document
from promo_libs.mongo.repository import MongoRepository
from promo_libs.mongo.times import from_millis, optional_from_millis, optional_to_millis, to_millis
from promo_libs.outbox import OutboxEntry
from promo_libs.users import UserSnapshot

EncodeEvents = Callable[[Sequence[OrderEvent]], list[OutboxEntry]]


def _user_document(user: UserSnapshot) -> Document:
    return {
        "id": user.id,
        "email": user.email,
        "display_name": user.display_name,
        "active": user.active,
        "created_at": optional_to_millis(user.created_at),
        "deleted_at": optional_to_millis(user.deleted_at),
    }


def _user(document: Document) -> UserSnapshot:
    return UserSnapshot(
        id=document["id"],
        email=document.get("email", ""),
        display_name=document.get("display_name", ""),
        active=bool(document.get("active", False)),
        created_at=optional_from_millis(document.get("created_at")),
        deleted_at=optional_from_millis(document.get("deleted_at")),
    )


def _promo_document(promo: PromoCodeSnapshot | None) -> Document | None:
    if promo is None:
        return None
    return {
        "id": promo.id,
        "code": promo.code,
        "discount_type": promo.discount_type,
        "basis_points": promo.basis_points,
        "fixed_amount_minor": promo.fixed_amount_minor,
        "max_discount_minor": promo.max_discount_minor,
        "currency": promo.currency,
        "min_order_amount_minor": promo.min_order_amount_minor,
        "max_uses": promo.max_uses,
        "max_uses_per_user": promo.max_uses_per_user,
        "budget_minor": promo.budget_minor,
        "batch_id": promo.batch_id,
        "active": promo.active,
        "valid_from": optional_to_millis(promo.valid_from),
        "valid_until": optional_to_millis(promo.valid_until),
        "created_at": optional_to_millis(promo.created_at),
        "campaign_id": promo.campaign_id,
    }


def _promo(document: Document | None) -> PromoCodeSnapshot | None:
    if not document:
        return None
    return PromoCodeSnapshot(
        id=document["id"],
        code=document["code"],
        discount_type=document.get("discount_type", ""),
        basis_points=document.get("basis_points", 0),
        fixed_amount_minor=document.get("fixed_amount_minor", 0),
        max_discount_minor=document.get("max_discount_minor"),
        currency=document.get("currency", ""),
        min_order_amount_minor=document.get("min_order_amount_minor"),
        max_uses=document.get("max_uses"),
        max_uses_per_user=document.get("max_uses_per_user"),
        budget_minor=document.get("budget_minor"),
        batch_id=document.get("batch_id", ""),
        active=bool(document.get("active", True)),
        valid_from=optional_from_millis(document.get("valid_from")),
        valid_until=optional_from_millis(document.get("valid_until")),
        created_at=optional_from_millis(document.get("created_at")),
        campaign_id=document.get("campaign_id") or "",  # snapshots stored before campaigns
    )


def _lines(document: Document) -> tuple[OrderLine, ...]:
    """An order stored before carts is the one line of its subtotal, holding its discount."""
    stored = document.get("lines")
    if not stored:
        return (
            OrderLine(
                "", 1, document["subtotal_minor"], discount=document.get("discount_minor", 0)
            ),
        )
    return tuple(
        OrderLine(
            line["sku"],
            line["quantity"],
            line["unit_price"],
            line.get("product_id", ""),
            tuple(line.get("category_ids") or ()),
            line.get("discount", 0),
        )
        for line in stored
    )


class MongoOrderRepository(MongoRepository[Order, EncodeEvents], OrderRepository):
    collection_name = "orders"

    def to_document(self, entity: Order) -> Document:
        return {
            "_id": entity.id,
            "user_id": entity.user_id,
            "idempotency_key": entity.idempotency_key,
            "currency": entity.subtotal.currency,
            "subtotal_minor": entity.subtotal.amount_minor,
            "discount_minor": entity.discount_minor,
            "promo_code": entity.promo_code,
            "promo_code_id": entity.promo_code_id,
            "usage_id": entity.usage_id,
            "status": entity.status,
            "rejection_reason": entity.rejection_reason,
            "cancellation_reason": entity.cancellation_reason,
            "created_at": to_millis(entity.created_at),
            "updated_at": to_millis(entity.updated_at),
            "confirmed_at": optional_to_millis(entity.confirmed_at),
            "cancelled_at": optional_to_millis(entity.cancelled_at),
            "cancel_requested_at": optional_to_millis(entity.cancel_requested_at),
            "sweep_due_at": optional_to_millis(entity.sweep_due_at),
            "user": _user_document(entity.user),
            "promo": _promo_document(entity.promo),
            "version": entity.version,
            "lines": [
                {
                    "sku": line.sku,
                    "quantity": line.quantity,
                    "unit_price": line.unit_price,
                    "product_id": line.product_id,
                    "category_ids": list(line.category_ids),
                    "discount": line.discount,
                }
                for line in entity.lines
            ],
            "shipping_minor": entity.shipping_minor,
            "shipping_discount_minor": entity.shipping_discount_minor,
            "first_order": entity.first_order,
            "campaign_id": entity.campaign_id,
        }

    def from_document(self, document: Document) -> Order:
        version = document.get("version", 1)
        return Order(
            id=document["_id"],
            user_id=document["user_id"],
            subtotal=Money(document["currency"], document["subtotal_minor"]),
            promo_code=document.get("promo_code", ""),
            idempotency_key=document["idempotency_key"],
            status=document["status"],
            created_at=from_millis(document["created_at"]),
            updated_at=from_millis(document["updated_at"]),
            user=_user(document["user"]),
            discount_minor=document.get("discount_minor", 0),
            promo_code_id=document.get("promo_code_id", ""),
            usage_id=document.get("usage_id", ""),
            promo=_promo(document.get("promo")),
            rejection_reason=document.get("rejection_reason", ""),
            cancellation_reason=document.get("cancellation_reason", ""),
            confirmed_at=optional_from_millis(document.get("confirmed_at")),
            cancelled_at=optional_from_millis(document.get("cancelled_at")),
            cancel_requested_at=optional_from_millis(document.get("cancel_requested_at")),
            sweep_due_at=optional_from_millis(document.get("sweep_due_at")),
            version=version,
            stored_version=version,
            lines=_lines(document),
            shipping_minor=document.get("shipping_minor", 0),
            shipping_discount_minor=document.get("shipping_discount_minor", 0),
            first_order=bool(document.get("first_order", False)),
            campaign_id=document.get("campaign_id") or "",  # orders stored before campaigns
        )

    async def has_confirmed_order(self, user_id: str) -> bool:
        # `$eq`, not `{"user_id": v}`: the same on MongoDB, and the stand-in serves only this
        # form from the index user_created (DESIGN.md, the stand-in's query plans).
        found = await self.collection.find_one(
            {"user_id": {"$eq": user_id}, "status": CONFIRMED}, {"_id": 1}
        )
        return found is not None

    async def get(self, order_id: str) -> Order | None:
        return await self.find_by_id(order_id)

    async def get_by_idempotency_key(self, user_id: str, key: str) -> Order | None:
        document = await self.collection.find_one({"user_id": user_id, "idempotency_key": key})
        return None if document is None else self.from_document(document)

    async def add(self, order: Order) -> None:
        try:
            await self.create(order, self._encode(order.events))
        except DuplicateKeyError as exc:
            if "idempotency_key" in str(exc):
                raise DuplicateIdempotencyKey(order.idempotency_key) from None
            raise
        order.events.clear()
        order.stored_version = order.version

    async def save(self, order: Order) -> None:
        changes = self.to_document(order)
        del changes["_id"]
        try:
            await self.write(
                order.id,
                changes,
                self._encode(order.events),
                expected={"version": order.stored_version},
            )
        except KeyError:
            raise VersionConflict(order.id) from None
        order.events.clear()
        order.stored_version = order.version

    async def list_page(
        self, query: OrderQuery, after: OrderCursor | None, size: int
    ) -> tuple[list[Order], OrderCursor | None]:
        clauses: list[dict[str, Any]] = []
        if query.user_id:
            clauses.append({"user_id": {"$eq": query.user_id}})
        if query.status:
            clauses.append({"status": {"$eq": query.status}})
        created: dict[str, int] = {}
        if query.created_from is not None:
            created["$gte"] = to_millis(query.created_from)
        if query.created_until is not None:
            created["$lt"] = to_millis(query.created_until)
        if created:
            clauses.append({"created_at": created})
        if after is not None:
            millis = to_millis(after.created_at)
            clauses.append(
                {
                    "$or": [
                        {"created_at": {"$lt": millis}},
                        {"created_at": millis, "_id": {"$lt": after.order_id}},
                    ]
                }
            )
        mongo_filter: dict[str, Any] = {"$and": clauses} if clauses else {}
        cursor = (
            self.collection.find(mongo_filter, {"outbox": 0})
            .sort([("created_at", DESCENDING), ("_id", DESCENDING)])
            .limit(size + 1)
        )
        documents = [document async for document in cursor]
        orders = [self.from_document(d) for d in documents[:size]]
        if len(documents) > size and orders:
            last = orders[-1]
            return orders, OrderCursor(last.created_at, last.id)
        return orders, None

    async def due_for_sweep(self, now: datetime, limit: int) -> list[Order]:
        cursor = (
            self.collection.find({"sweep_due_at": {"$lte": to_millis(now)}}, {"outbox": 0})
            .sort("sweep_due_at", 1)
            .limit(limit)
        )
        return [self.from_document(document) async for document in cursor]
