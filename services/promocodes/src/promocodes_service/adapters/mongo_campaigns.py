"""CampaignRepository on MongoDB: collection `campaigns`, one document per campaign.

The document holds the rules (one `rules` sub-document, always written whole), the counters
`uses` and `discount_granted` of the ACTIVE redemptions of all the campaign's codes plus the
reservations in flight, and those reservations as a map `pending.<redemption id>` with
`pending_count`: the ledger a code holds too (adapters/reservation_ledger.py), where reserve,
begin_release and settle are each one atomic update whose filter is the whole condition. An
update of the rules is one conditional write: on the version read and on the counters fitting
the new limits; it never touches the counters or the reservations.
CreateCampaign's insert and UpdateCampaign's conditional write carry the campaign's event in the
same document (the outbox, as for codes: `outbox.<event_id>` plus `outbox_pending`), so a crash
after the write leaves the event to the relay; the ledger's writes (reserve, begin_release,
settle) never touch the outbox, so redemptions publish no campaign events.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from promo_libs.mongo.connection import Document
from promo_libs.mongo.repository import MongoRepository
from promo_libs.mongo.times import from_millis, optional_from_millis, optional_to_millis, to_millis
from promo_libs.outbox import OutboxEntry, outbox_fields
from promocodes_service.adapters.migrations import CAMPAIGNS
from promocodes_service.adapters.reservation_ledger import (
    ReservationLedger,
    limits_fit,
    reservation_document,
    reservations_from_document,
    room_for,
)
from promocodes_service.domain.campaign import Campaign, CampaignRules
from promocodes_service.domain.events import CampaignCreated, CampaignEvent, CampaignUpdated
from promocodes_service.domain.model import Reservation
from promocodes_service.domain.ports import CampaignRepository, VersionConflict

EncodeEvents = Callable[[Sequence[CampaignEvent], int], list[OutboxEntry]]


def replay_event(campaign: Campaign) -> CampaignEvent:
    """The one event that describes a stored campaign as it is now (a replay, or a campaign
    stored before campaigns had events): CampaignCreated while its rules never changed,
    CampaignUpdated (no changed fields known) after."""
    if campaign.version == 1:
        return CampaignCreated(campaign.snapshot(), campaign.created_at)
    return CampaignUpdated(campaign.snapshot(), (), campaign.updated_at)


def campaign_rules_document(campaign: Campaign) -> Document:
    r = campaign.rules
    return {
        "display_name": r.display_name,
        "description": r.description,
        "max_uses": r.max_uses,
        "max_uses_per_user": r.max_uses_per_user,
        "budget": r.budget,
        "currency": r.currency,
        "valid_from": optional_to_millis(r.valid_from),
        "valid_until": optional_to_millis(r.valid_until),
        "updated_at": to_millis(campaign.updated_at),
    }


class MongoCampaignRepository(
    MongoRepository[Campaign, EncodeEvents], ReservationLedger[Campaign], CampaignRepository
):
    collection_name = CAMPAIGNS

    def to_document(self, entity: Campaign) -> Document:
        return {
            "_id": entity.id,
            "created_at": to_millis(entity.created_at),
            "version": entity.version,
            "rules": campaign_rules_document(entity),
            "uses": entity.uses,
            "discount_granted": entity.discount_granted,
            "redeemed_total": entity.redeemed_total,
            "pending": {k: reservation_document(v) for k, v in entity.pending.items()},
            "pending_count": len(entity.pending),
        }

    def from_document(self, document: Document) -> Campaign:
        stored: Document = document["rules"]
        return Campaign(
            id=document["_id"],
            rules=CampaignRules(
                display_name=stored["display_name"],
                description=stored.get("description", ""),
                max_uses=stored.get("max_uses"),
                max_uses_per_user=stored.get("max_uses_per_user"),
                budget=stored.get("budget"),
                currency=stored.get("currency"),
                valid_from=optional_from_millis(stored.get("valid_from")),
                valid_until=optional_from_millis(stored.get("valid_until")),
            ),
            created_at=from_millis(document["created_at"]),
            updated_at=from_millis(stored["updated_at"]),
            version=document.get("version", 1),
            uses=document.get("uses", 0),
            discount_granted=document.get("discount_granted", 0),
            redeemed_total=document.get("redeemed_total", 0),
            pending=reservations_from_document(document),
        )

    async def get(self, campaign_id: str) -> Campaign | None:
        return await self.find_by_id(campaign_id)

    async def add(self, campaign: Campaign) -> None:
        await self.create(campaign, self._encode(campaign.events, campaign.version))
        campaign.events.clear()

    async def save(
        self, campaign: Campaign, expected_version: int, require_unused: bool = False
    ) -> None:
        query: Document = {
            "_id": campaign.id,
            "version": expected_version,
            **limits_fit(campaign.rules.max_uses, campaign.rules.budget),
        }
        if require_unused:
            query["redeemed_total"] = {"$eq": 0}  # migration 3 wrote it on older campaigns
        changes = {
            "rules": campaign_rules_document(campaign),
            "version": campaign.version,
            **outbox_fields(self._encode(campaign.events, campaign.version), nested=False),
        }
        result = await self.collection.update_one(query, {"$set": changes})
        if result.matched_count != 1:
            raise VersionConflict(campaign.id)
        campaign.events.clear()
        self._on_events_written()

    async def list_page(self, after_id: str | None, size: int) -> tuple[list[Campaign], str | None]:
        filter_: Document = {} if after_id is None else {"_id": {"$gt": after_id}}
        cursor = self.collection.find(filter_).sort("_id", 1).limit(size + 1)
        documents = [d async for d in cursor]
        campaigns = [self.from_document(d) for d in documents[:size]]
        more = len(documents) > size and bool(campaigns)
        return campaigns, (campaigns[-1].id if more else None)

    async def reserve(
        self, campaign: Campaign, redemption_id: str, reservation: Reservation
    ) -> bool:
        r = campaign.rules
        at = to_millis(reservation.at)
        query: Document = {
            "_id": campaign.id,
            "version": campaign.version,
            **room_for(reservation, r.max_uses, r.budget),
        }
        if r.valid_from is not None:
            query["rules.valid_from"] = {"$lte": at}
        if r.valid_until is not None:
            query["rules.valid_until"] = {"$gt": at}
        return await self._reserve_where(query, redemption_id, reservation)
