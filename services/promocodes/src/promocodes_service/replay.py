"""`python -m promocodes_service replay --stream NAME`: codes, usages, campaigns as events (I6).

Reads only this service's database. One event per promo code with its current snapshot
(PromoCodeCreated if never changed, PromoCodeDeactivated if inactive, PromoCodeUpdated
otherwise) and one per visible usage (PromoCodeRedeemed while ACTIVE, PromoCodeReleased once
released) with the code's snapshot; abandoned ids (fences of rolled-back attempts, which never
produced an event) are skipped; one per campaign with its current rules (CampaignCreated if
never changed, CampaignUpdated otherwise). Each carries the document's current version.
"""

from __future__ import annotations

from collections.abc import Sequence

from pymongo.asynchronous.database import AsyncDatabase

from promo_libs import replay
from promo_libs.outbox import OutboxEntry
from promocodes_service.adapters.event_codec import (
    encode_campaign_events,
    encode_code_events,
    encode_usage_events,
)
from promocodes_service.adapters.mongo_campaigns import MongoCampaignRepository, replay_event
from promocodes_service.adapters.mongo_codes import MongoPromoCodeRepository
from promocodes_service.adapters.mongo_usages import MongoUsageRepository
from promocodes_service.domain import events
from promocodes_service.domain.model import ACTIVE, RELEASED, PromoCode


def sources(db: AsyncDatabase[replay.Document]) -> Sequence[replay.Source]:
    codes = MongoPromoCodeRepository(db, encode_code_events)
    usages = MongoUsageRepository(db, encode_usage_events)
    campaigns = MongoCampaignRepository(db, encode_campaign_events)
    known: dict[str, PromoCode] = {}

    async def code_entries(document: replay.Document) -> list[OutboxEntry]:
        promo = codes.from_document(document)
        snapshot = promo.snapshot()
        event: events.CodeEvent
        if not promo.rules.active:
            event = events.PromoCodeDeactivated(snapshot, promo.updated_at)
        elif promo.version == 1:
            event = events.PromoCodeCreated(snapshot, promo.created_at)
        else:
            event = events.PromoCodeUpdated(snapshot, (), promo.updated_at)
        return encode_code_events([event], promo.version)

    async def usage_entries(document: replay.Document) -> list[OutboxEntry]:
        usage = usages.from_document(document)
        if usage.status not in (ACTIVE, RELEASED):
            return []
        promo = known.get(usage.promo_code_id)
        if promo is None:
            found = await codes.find_by_id(usage.promo_code_id)
            if found is None:
                raise LookupError(f"usage {usage.id} of a missing promo code")
            promo = known[usage.promo_code_id] = found
        event: events.UsageEvent
        if usage.status == RELEASED:
            released_at = usage.released_at or usage.created_at
            event = events.PromoCodeReleased(
                usage.snapshot(), promo.snapshot(), usage.user, released_at
            )
        else:
            event = events.PromoCodeRedeemed(
                usage.snapshot(), promo.snapshot(), usage.user, usage.created_at
            )
        return encode_usage_events([event], usage.version)

    async def campaign_entries(document: replay.Document) -> list[OutboxEntry]:
        campaign = campaigns.from_document(document)
        return encode_campaign_events([replay_event(campaign)], campaign.version)

    return [
        replay.Source(MongoCampaignRepository.collection_name, campaign_entries),
        replay.Source(MongoPromoCodeRepository.collection_name, code_entries),
        replay.Source(MongoUsageRepository.collection_name, usage_entries),
    ]
