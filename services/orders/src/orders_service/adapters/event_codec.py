"""Order domain events -> promo.v1 event envelopes in the outbox (stream ORDERS_STREAM)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from google.protobuf.message import Message

from orders_service.domain.events import (
    OrderCancelled,
    OrderConfirmed,
    OrderCreated,
    OrderEvent,
    OrderRejected,
    OrderSnapshot,
    PromoCodeSnapshot,
)
from orders_service.domain.model import Order
from promo.v1 import events_pb2, orders_pb2
from promo_libs.events import ORDERS_STREAM, outbox_entry, user_snapshot_message
from promo_libs.grpc.mapping import timestamp
from promo_libs.outbox import OutboxEntry

PRODUCER = "orders"
AGGREGATE_TYPE = "order"

_DISCOUNT_TYPES = {
    "PERCENTAGE": events_pb2.DISCOUNT_TYPE_PERCENTAGE,
    "FIXED_AMOUNT": events_pb2.DISCOUNT_TYPE_FIXED_AMOUNT,
}


def status_value(status: str) -> orders_pb2.OrderStatus.ValueType:
    return orders_pb2.OrderStatus.Value(f"ORDER_STATUS_{status}")


def order_fields(order: Order | OrderSnapshot) -> dict[str, Any]:
    """The fields an order's API message (orders_pb2.Order) and its event snapshot
    (events_pb2.OrderSnapshot) share, by the same names: one mapping of the order's state.
    Amounts and lines differ (Money messages there, minor units here) and stay with each."""
    return {
        "id": order.id,
        "user_id": order.user_id,
        "promo_code": order.promo_code,
        "promo_code_id": order.promo_code_id,
        "promo_code_usage_id": order.usage_id,
        "status": status_value(order.status),
        "rejection_reason": order.rejection_reason,
        "cancellation_reason": order.cancellation_reason,
        "idempotency_key": order.idempotency_key,
        "create_time": timestamp(order.created_at),
        "update_time": timestamp(order.updated_at),
        "confirm_time": timestamp(order.confirmed_at),
        "cancel_time": timestamp(order.cancelled_at),
    }


def promo_message(promo: PromoCodeSnapshot) -> events_pb2.PromoCodeSnapshot:
    return events_pb2.PromoCodeSnapshot(
        id=promo.id,
        code=promo.code,
        discount_type=_DISCOUNT_TYPES.get(
            promo.discount_type, events_pb2.DISCOUNT_TYPE_UNSPECIFIED
        ),
        basis_points=promo.basis_points,
        fixed_amount_minor=promo.fixed_amount_minor,
        max_discount_minor=promo.max_discount_minor,
        currency_code=promo.currency,
        min_order_amount_minor=promo.min_order_amount_minor,
        max_uses=promo.max_uses,
        max_uses_per_user=promo.max_uses_per_user,
        budget_minor=promo.budget_minor,
        batch_id=promo.batch_id,
        active=promo.active,
        valid_from=timestamp(promo.valid_from),
        valid_until=timestamp(promo.valid_until),
        create_time=timestamp(promo.created_at),
        campaign_id=promo.campaign_id,
    )


def order_message(order: OrderSnapshot) -> events_pb2.OrderSnapshot:
    return events_pb2.OrderSnapshot(
        **order_fields(order),
        currency_code=order.currency,
        subtotal_minor=order.subtotal_minor,
        discount_minor=order.discount_minor,
        total_minor=order.total_minor,
        lines=[
            events_pb2.LineSnapshot(
                sku=line.sku,
                product_id=line.product_id,
                category_ids=list(line.category_ids),
                quantity=line.quantity,
                unit_price_minor=line.unit_price,
                discount_minor=line.discount,
            )
            for line in order.lines
        ],
        shipping_minor=order.shipping_minor,
        shipping_discount_minor=order.shipping_discount_minor,
        campaign_id=order.campaign_id,
    )


def _payload(event: OrderEvent) -> tuple[str, Message]:
    order = order_message(event.order)
    user = user_snapshot_message(event.user)
    if isinstance(event, OrderCreated):
        return "order_created", events_pb2.OrderCreated(order=order, user=user)
    if isinstance(event, OrderConfirmed):
        confirmed = events_pb2.OrderConfirmed(order=order, user=user)
        if event.promo_code is not None:
            confirmed.promo_code.CopyFrom(promo_message(event.promo_code))
        return "order_confirmed", confirmed
    if isinstance(event, OrderRejected):
        return "order_rejected", events_pb2.OrderRejected(order=order, user=user)
    if isinstance(event, OrderCancelled):
        cancelled = events_pb2.OrderCancelled(order=order, user=user)
        if event.promo_code is not None:
            cancelled.promo_code.CopyFrom(promo_message(event.promo_code))
        return "order_cancelled", cancelled
    raise TypeError(f"unknown order event {event!r}")


def encode_events(events: Sequence[OrderEvent]) -> list[OutboxEntry]:
    entries = []
    for event in events:
        field, payload = _payload(event)
        entries.append(
            outbox_entry(
                stream=ORDERS_STREAM,
                payload_field=field,
                payload=payload,
                aggregate_type=AGGREGATE_TYPE,
                aggregate_id=event.order.id,
                aggregate_version=event.version,
                producer=PRODUCER,
                occurred_at=event.occurred_at,
            )
        )
    return entries
