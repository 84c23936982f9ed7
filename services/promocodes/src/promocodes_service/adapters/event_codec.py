"""Promo-code domain events -> promo.v1 event envelopes in the outbox.

Codes (aggregate_type "promo_code"), usages ("promo_code_usage") and campaigns ("campaign") all
go to the promocodes stream, each aggregate's events in its version order.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

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
        campaign_id=usage.campaign_id,
    )


def campaign_snapshot(campaign: domain.CampaignSnapshot) -> events_pb2.CampaignSnapshot:
    return events_pb2.CampaignSnapshot(
        id=campaign.id,
        display_name=campaign.display_name,
        description=campaign.description,
        max_uses=campaign.max_uses,
        max_uses_per_user=campaign.max_uses_per_user,
        budget_minor=campaign.budget_minor,
        # The currency is the budget's: none without a budget (a removed budget's currency is
        # kept on the campaign only to count granted discounts in).
        currency_code=(campaign.currency or "") if campaign.budget_minor is not None else "",
        valid_from=timestamp(campaign.valid_from),
        valid_until=timestamp(campaign.valid_until),
        create_time=timestamp(campaign.created_at),
        update_time=timestamp(campaign.updated_at),
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


def _campaign_payload(event: domain.CampaignEvent) -> tuple[str, Message]:
    snapshot = campaign_snapshot(event.campaign)
    if isinstance(event, domain.CampaignCreated):
        return "campaign_created", events_pb2.CampaignCreated(campaign=snapshot)
    if isinstance(event, domain.CampaignUpdated):
        return "campaign_updated", events_pb2.CampaignUpdated(
            campaign=snapshot, changed_fields=list(event.changed_fields)
        )
    raise TypeError(f"unknown campaign event {event!r}")


def _entry(
    payload: tuple[str, Message],
    occurred_at: datetime,
    aggregate_type: str,
    aggregate_id: str,
    version: int,
) -> OutboxEntry:
    """One event (its envelope's payload field and message) as an outbox entry at `version`."""
    field, message = payload
    return outbox_entry(
        stream=PROMO_CODES_STREAM,
        payload_field=field,
        payload=message,
        aggregate_type=aggregate_type,
        aggregate_id=aggregate_id,
        aggregate_version=version,
        producer=PRODUCER,
        occurred_at=occurred_at,
    )


def encode_code_events(events: Sequence[domain.CodeEvent], version: int) -> list[OutboxEntry]:
    return [
        _entry(_code_payload(e), e.occurred_at, "promo_code", e.code.id, version) for e in events
    ]


def encode_usage_events(events: Sequence[domain.UsageEvent], version: int) -> list[OutboxEntry]:
    return [
        _entry(_usage_payload(e), e.occurred_at, "promo_code_usage", e.usage.id, version)
        for e in events
    ]


def encode_campaign_events(
    events: Sequence[domain.CampaignEvent], version: int
) -> list[OutboxEntry]:
    return [
        _entry(_campaign_payload(e), e.occurred_at, "campaign", e.campaign.id, version)
        for e in events
    ]
