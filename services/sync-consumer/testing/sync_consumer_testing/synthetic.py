"""Synthetic events, as producers write them, for tests and the benchmark.

Each builder returns a serialized promo.v1.EventEnvelope ready to publish.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from promo.v1 import events_pb2, orders_pb2, promo_codes_pb2
from promo_libs.events import ORDERS_STREAM, PROMO_CODES_STREAM, USERS_STREAM
from promo_libs.grpc.mapping import timestamp

__all__ = ["ORDERS_STREAM", "PROMO_CODES_STREAM", "USERS_STREAM"]


def envelope(
    field: str,
    payload: object,
    *,
    aggregate_type: str,
    aggregate_id: str,
    version: int,
    at: datetime,
    event_id: str | None = None,
) -> events_pb2.EventEnvelope:
    message = events_pb2.EventEnvelope(
        event_id=event_id or uuid.uuid4().hex,
        type=payload.DESCRIPTOR.full_name,  # type: ignore[attr-defined]
        occurred_at=timestamp(at),
        aggregate_type=aggregate_type,
        aggregate_id=aggregate_id,
        aggregate_version=version,
        producer="synthetic",
    )
    getattr(message, field).CopyFrom(payload)
    return message


def user(user_id: str, at: datetime, email: str | None = None) -> events_pb2.UserSnapshot:
    return events_pb2.UserSnapshot(
        id=user_id,
        email=email or f"{user_id}@example.com",
        display_name=f"User {user_id}",
        active=True,
        create_time=timestamp(at),
    )


def promo_code(code_id: str, at: datetime, campaign_id: str = "") -> events_pb2.PromoCodeSnapshot:
    return events_pb2.PromoCodeSnapshot(
        campaign_id=campaign_id,
        id=code_id,
        code=f"CODE-{code_id}".upper(),
        discount_type=events_pb2.DISCOUNT_TYPE_PERCENTAGE,
        basis_points=1000,
        currency_code="EUR",
        active=True,
        create_time=timestamp(at),
    )


def user_created(user_id: str, at: datetime) -> events_pb2.EventEnvelope:
    return envelope(
        "user_created",
        events_pb2.UserCreated(user=user(user_id, at)),
        aggregate_type="user",
        aggregate_id=user_id,
        version=1,
        at=at,
    )


def order_event(
    kind: str,
    order_id: str,
    user_id: str,
    at: datetime,
    *,
    subtotal: int,
    discount: int = 0,
    code_id: str = "",
    version: int,
    campaign_id: str = "",
) -> events_pb2.EventEnvelope:
    """kind: created, confirmed, rejected or cancelled."""
    status = {
        "created": orders_pb2.ORDER_STATUS_PENDING,
        "confirmed": orders_pb2.ORDER_STATUS_CONFIRMED,
        "rejected": orders_pb2.ORDER_STATUS_REJECTED,
        "cancelled": orders_pb2.ORDER_STATUS_CANCELLED,
    }[kind]
    order = events_pb2.OrderSnapshot(
        id=order_id,
        user_id=user_id,
        currency_code="EUR",
        subtotal_minor=subtotal,
        discount_minor=discount,
        total_minor=subtotal - discount,
        promo_code=f"CODE-{code_id}".upper() if code_id else "",
        promo_code_id=code_id,
        promo_code_usage_id=order_id if code_id else "",
        campaign_id=campaign_id,
        status=status,
        create_time=timestamp(at),
        update_time=timestamp(at),
        confirm_time=timestamp(at) if kind == "confirmed" else None,
        cancel_time=timestamp(at) if kind == "cancelled" else None,
        cancellation_reason="changed mind" if kind == "cancelled" else "",
    )
    snapshot = user(user_id, at)
    payload: object
    if kind == "created":
        payload = events_pb2.OrderCreated(order=order, user=snapshot)
    elif kind == "rejected":
        payload = events_pb2.OrderRejected(order=order, user=snapshot)
    else:
        cls = events_pb2.OrderConfirmed if kind == "confirmed" else events_pb2.OrderCancelled
        payload = cls(
            order=order,
            user=snapshot,
            promo_code=promo_code(code_id, at, campaign_id) if code_id else None,
        )
    return envelope(
        f"order_{kind}",
        payload,
        aggregate_type="order",
        aggregate_id=order_id,
        version=version,
        at=at,
    )


def usage_event(
    kind: str,
    usage_id: str,
    code_id: str,
    user_id: str,
    at: datetime,
    *,
    amount: int,
    discount: int,
    version: int,
    campaign_id: str = "",
) -> events_pb2.EventEnvelope:
    """kind: redeemed or released."""
    released = kind == "released"
    usage = events_pb2.UsageSnapshot(
        id=usage_id,
        promo_code_id=code_id,
        code=f"CODE-{code_id}".upper(),
        user_id=user_id,
        order_id=usage_id,
        campaign_id=campaign_id,
        currency_code="EUR",
        order_amount_minor=amount,
        discount_minor=discount,
        status=promo_codes_pb2.PROMO_CODE_USAGE_STATUS_RELEASED
        if released
        else promo_codes_pb2.PROMO_CODE_USAGE_STATUS_ACTIVE,
        release_reason="order cancelled" if released else "",
        create_time=timestamp(at),
        release_time=timestamp(at) if released else None,
    )
    cls = events_pb2.PromoCodeReleased if released else events_pb2.PromoCodeRedeemed
    payload = cls(
        usage=usage, promo_code=promo_code(code_id, at, campaign_id), user=user(user_id, at)
    )
    return envelope(
        f"promo_code_{kind}",
        payload,
        aggregate_type="promo_code_usage",
        aggregate_id=usage_id,
        version=version,
        at=at,
    )


def promo_code_created(
    code_id: str, at: datetime, *, campaign_id: str = "", version: int = 1
) -> events_pb2.EventEnvelope:
    return envelope(
        "promo_code_created",
        events_pb2.PromoCodeCreated(promo_code=promo_code(code_id, at, campaign_id)),
        aggregate_type="promo_code",
        aggregate_id=code_id,
        version=version,
        at=at,
    )


def campaign(
    campaign_id: str,
    at: datetime,
    *,
    max_uses: int | None = None,
    budget_minor: int | None = None,
    max_uses_per_user: int | None = None,
    currency_code: str = "EUR",
) -> events_pb2.CampaignSnapshot:
    snapshot = events_pb2.CampaignSnapshot(
        id=campaign_id,
        display_name=f"Campaign {campaign_id}",
        description="synthetic",
        currency_code=currency_code if budget_minor is not None else "",
        create_time=timestamp(at),
        update_time=timestamp(at),
    )
    if max_uses is not None:
        snapshot.max_uses = max_uses
    if budget_minor is not None:
        snapshot.budget_minor = budget_minor
    if max_uses_per_user is not None:
        snapshot.max_uses_per_user = max_uses_per_user
    return snapshot


def campaign_event(
    kind: str, snapshot: events_pb2.CampaignSnapshot, *, version: int, at: datetime
) -> events_pb2.EventEnvelope:
    """kind: created or updated."""
    payload: object = (
        events_pb2.CampaignCreated(campaign=snapshot)
        if kind == "created"
        else events_pb2.CampaignUpdated(campaign=snapshot, changed_fields=["max_uses"])
    )
    return envelope(
        f"campaign_{kind}",
        payload,
        aggregate_type="campaign",
        aggregate_id=snapshot.id,
        version=version,
        at=at,
    )
