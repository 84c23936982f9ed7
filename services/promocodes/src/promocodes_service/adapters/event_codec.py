"""Promo-code domain events -> promo.v1 event envelopes in the outbox."""

from __future__ import annotations

from collections.abc import Sequence

from google.protobuf.message import Message

from promo.v1 import events_pb2, promo_codes_pb2
from promo_libs.events import PROMO_CODES_STREAM, outbox_entry, user_snapshot_message
from promo_libs.grpc.mapping import timestamp
from promo_libs.outbox import OutboxEntry
from promocodes_service.domain import events as domain

PRODUCER = "promocodes"


def code_snapshot(code: domain.CodeSnapshot) -> events_pb2.PromoCodeSnapshot:
    return events_pb2.PromoCodeSnapshot(
        id=code.id,
        code=code.code,
        discount_type=events_pb2.DiscountType.Value(f"DISCOUNT_TYPE_{code.discount_type}"),
        basis_points=code.basis_points,
        fixed_amount_minor=code.fixed_amount_minor,
        max_discount_minor=code.max_discount_minor,
        currency_code=code.currency or "",
        min_order_amount_minor=code.min_order_amount_minor,
        max_uses=code.max_uses,
        max_uses_per_user=code.max_uses_per_user,
        budget_minor=code.budget_minor,
        batch_id=code.batch_id,
        active=code.active,
        valid_from=timestamp(code.valid_from),
        valid_until=timestamp(code.valid_until),
        create_time=timestamp(code.created_at),
        campaign_id=code.campaign_id,
    )


def usage_snapshot(usage: domain.UsageSnapshot) -> events_pb2.UsageSnapshot:
    return events_pb2.UsageSnapshot(
        id=usage.id,
        promo_code_id=usage.promo_code_id,
        code=usage.code,
        user_id=usage.user_id,
        order_id=usage.id,
        currency_code=usage.currency,
        order_amount_minor=usage.order_amount,
        discount_minor=usage.discount,
        status=promo_codes_pb2.PromoCodeUsageStatus.Value(
            f"PROMO_CODE_USAGE_STATUS_{usage.status}"
        ),
        release_reason=usage.release_reason,
        create_time=timestamp(usage.created_at),
        release_time=timestamp(usage.released_at),
        lines=[
            events_pb2.LineSnapshot(
                sku=s.sku,
                product_id=s.product_id,
                category_ids=list(s.category_ids),
                quantity=s.quantity,
                unit_price_minor=s.unit_price,
                discount_minor=s.discount,
            )
            for s in usage.lines
        ],
        shipping_minor=usage.shipping,
        shipping_discount_minor=usage.shipping_discount,
    )


def _code_payload(event: domain.CodeEvent) -> tuple[str, Message]:
    snapshot = code_snapshot(event.code)
    if isinstance(event, domain.PromoCodeCreated):
        return "promo_code_created", events_pb2.PromoCodeCreated(promo_code=snapshot)
    if isinstance(event, domain.PromoCodeUpdated):
        return "promo_code_updated", events_pb2.PromoCodeUpdated(
            promo_code=snapshot, changed_fields=list(event.changed_fields)
        )
    if isinstance(event, domain.PromoCodeDeactivated):
        return "promo_code_deactivated", events_pb2.PromoCodeDeactivated(promo_code=snapshot)
    raise TypeError(f"unknown promo code event {event!r}")


def _usage_payload(event: domain.UsageEvent) -> tuple[str, Message]:
    usage, code, user = (
        usage_snapshot(event.usage),
        code_snapshot(event.code),
        user_snapshot_message(event.user),
    )
    if isinstance(event, domain.PromoCodeRedeemed):
        return "promo_code_redeemed", events_pb2.PromoCodeRedeemed(
            usage=usage, promo_code=code, user=user
        )
    if isinstance(event, domain.PromoCodeReleased):
        return "promo_code_released", events_pb2.PromoCodeReleased(
            usage=usage, promo_code=code, user=user
        )
    raise TypeError(f"unknown usage event {event!r}")


def encode_code_events(events: Sequence[domain.CodeEvent], version: int) -> list[OutboxEntry]:
    entries = []
    for event in events:
        field, payload = _code_payload(event)
        entries.append(
            outbox_entry(
                stream=PROMO_CODES_STREAM,
                payload_field=field,
                payload=payload,
                aggregate_type="promo_code",
                aggregate_id=event.code.id,
                aggregate_version=version,
                producer=PRODUCER,
                occurred_at=event.occurred_at,
            )
        )
    return entries


def encode_usage_events(events: Sequence[domain.UsageEvent], version: int) -> list[OutboxEntry]:
    entries = []
    for event in events:
        field, payload = _usage_payload(event)
        entries.append(
            outbox_entry(
                stream=PROMO_CODES_STREAM,
                payload_field=field,
                payload=payload,
                aggregate_type="promo_code_usage",
                aggregate_id=event.usage.id,
                aggregate_version=version,
                producer=PRODUCER,
                occurred_at=event.occurred_at,
            )
        )
    return entries
