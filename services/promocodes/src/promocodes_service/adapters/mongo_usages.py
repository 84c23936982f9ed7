"""UsageRepository on MongoDB: collection `promo_code_usages`, one document per redemption.

`_id` is the redemption id, so a retried redemption collides with its first write. `slot` is the
per-user slot under the unique index (promo_id, user_id, slot): 1..max_uses_per_user while the
usage is ACTIVE, a string unique to the usage otherwise (no per-user limit, released, abandoned),
which frees the numbered slot. A usage of a campaign's code also holds `campaign_slot` under the
partial unique index (campaign_id, user_id, campaign_slot), by the same rules (1..the campaign's
max_uses_per_user while ACTIVE, `u:<id>` / `r:<id>` otherwise); other usages have no
`campaign_slot` at all and stay outside that index. `aborted.<attempt>` fences attempts the
sweep rolled back; a VOIDED document (a Release came first) fences every attempt, for good.
Moments are epoch milliseconds (promo_libs.mongo.times); release data is one sub-document
`release` written whole; a fenced id is taken over with a filtered replace (which, unlike
find_one_and_update on the stand-in, reports a unique-index violation).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from pymongo.errors import DuplicateKeyError

from promo_libs.mongo.connection import Document
from promo_libs.mongo.repository import MongoRepository
from promo_libs.mongo.times import optional_from_millis, optional_to_millis, to_millis
from promo_libs.outbox import OutboxEntry, outbox_fields
from promo_libs.users import UserSnapshot
from promocodes_service.adapters.migrations import USAGES
from promocodes_service.domain.events import CodeSnapshot, LineShare, UsageEvent
from promocodes_service.domain.model import ABANDONED, ACTIVE, RELEASED, VOIDED, Usage
from promocodes_service.domain.ports import (
    CLAIMED,
    EXISTS,
    FENCED,
    SLOT_TAKEN,
    Claim,
    UsageQuery,
    UsageRepository,
    usage_sort_key,
)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

EncodeEvents = Callable[[Sequence[UsageEvent], int], list[OutboxEntry]]


_SNAPSHOT_MOMENTS = ("valid_from", "valid_until", "created_at")


def code_snapshot_document(snapshot: CodeSnapshot | None) -> Document | None:
    """The code's rules as redeemed, field for field (moments as epoch milliseconds)."""
    if snapshot is None:
        return None
    document = {f.name: getattr(snapshot, f.name) for f in dataclasses.fields(snapshot)}
    for name in _SNAPSHOT_MOMENTS:
        document[name] = optional_to_millis(document[name])
    return document


def code_snapshot_from_document(document: Document | None) -> CodeSnapshot | None:
    if not document:
        return None  # a usage stored before snapshots were kept
    values: dict[str, Any] = {
        f.name: document.get(f.name) for f in dataclasses.fields(CodeSnapshot)
    }
    for name in _SNAPSHOT_MOMENTS:
        values[name] = optional_from_millis(values[name])
    values["active"] = bool(values["active"])
    values["campaign_id"] = values["campaign_id"] or ""  # snapshots kept before campaigns
    return CodeSnapshot(**values)


def slot_key(usage_id: str, slot: int | None) -> int | str:
    return f"u:{usage_id}" if slot is None else slot


class MongoUsageRepository(MongoRepository[Usage, EncodeEvents], UsageRepository):
    collection_name = USAGES

    def to_document(self, entity: Usage) -> Document:
        user = entity.user
        return {
            "_id": entity.id,
            "promo_id": entity.promo_code_id,
            "code": entity.code,
            "user_id": entity.user_id,
            "currency": entity.currency,
            "order_amount": entity.order_amount,
            "discount": entity.discount,
            "status": entity.status,
            "created_at": to_millis(entity.created_at),
            "attempt": entity.attempt,
            "release": {
                "reason": entity.release_reason,
                "at": optional_to_millis(entity.released_at),
                "by": entity.released_by,
            },
            "sort_key": usage_sort_key(entity.created_at, entity.id),
            "user": {
                "email": user.email,
                "display_name": user.display_name,
                "active": user.active,
                "created_at": optional_to_millis(user.created_at),
                "deleted_at": optional_to_millis(user.deleted_at),
            },
            "version": entity.version,
            "lines": [
                {
                    "sku": s.sku,
                    "quantity": s.quantity,
                    "unit_price": s.unit_price,
                    "discount": s.discount,
                    "product_id": s.product_id,
                    "category_ids": list(s.category_ids),
                }
                for s in entity.lines
            ],
            "shipping": entity.shipping,
            "shipping_discount": entity.shipping_discount,
            "first_order": entity.first_order,
            "code_snapshot": code_snapshot_document(entity.code_snapshot),
            "campaign_id": entity.campaign_id,
        }

    def from_document(self, document: Document) -> Usage:
        user = document.get("user") or {}
        release = document.get("release") or {}
        return Usage(
            id=document["_id"],
            promo_code_id=document.get("promo_id", ""),
            code=document.get("code", ""),
            user_id=document.get("user_id", ""),
            currency=document.get("currency", ""),
            order_amount=document.get("order_amount", 0),
            discount=document.get("discount", 0),
            created_at=optional_from_millis(document.get("created_at")) or _EPOCH,
            user=UserSnapshot(
                id=document.get("user_id", ""),
                email=user.get("email", ""),
                display_name=user.get("display_name", ""),
                active=bool(user.get("active", False)),
                created_at=optional_from_millis(user.get("created_at")),
                deleted_at=optional_from_millis(user.get("deleted_at")),
            ),
            status=document.get("status", ABANDONED),
            release_reason=release.get("reason", ""),
            released_at=optional_from_millis(release.get("at")),
            attempt=document.get("attempt", ""),
            released_by=release.get("by", ""),
            version=document.get("version", 1),
            lines=tuple(
                LineShare(
                    line["sku"],
                    line["quantity"],
                    line["unit_price"],
                    line["discount"],
                    line.get("product_id", ""),
                    tuple(line.get("category_ids") or ()),
                )
                for line in document.get("lines") or ()
            ),
            shipping=document.get("shipping", 0),
            shipping_discount=document.get("shipping_discount", 0),
            first_order=bool(document.get("first_order", False)),
            code_snapshot=code_snapshot_from_document(document.get("code_snapshot")),
            campaign_id=document.get("campaign_id") or "",
        )

    async def get(self, redemption_id: str) -> Usage | None:
        return await self.find_by_id(redemption_id)

    async def active_slots(self, promo_code_id: str, user_id: str) -> tuple[int, set[int]]:
        # `$eq`, not `{"promo_id": v}`: the same on MongoDB, but the stand-in turns an implicit
        # equality on a field that no index ends with into an array test that no index serves,
        # and scanned every usage here (half its time under load; DESIGN.md, query plans).
        cursor = self.collection.find(
            {"promo_id": {"$eq": promo_code_id}, "user_id": {"$eq": user_id}, "status": ACTIVE},
            {"slot": 1},
        )
        slots = [d.get("slot") async for d in cursor]
        return len(slots), {s for s in slots if isinstance(s, int)}

    async def campaign_slots(self, campaign_id: str, user_id: str) -> tuple[int, set[int]]:
        # $eq on the leading keys and the partial index's own condition: the stand-in keeps its
        # index, and MongoDB may use a partial index only for a query implying its filter.
        cursor = self.collection.find(
            {
                "campaign_id": {"$eq": campaign_id},
                "user_id": {"$eq": user_id},
                "campaign_slot": {"$exists": True},
                "status": ACTIVE,
            },
            {"campaign_slot": 1},
        )
        slots = [d.get("campaign_slot") async for d in cursor]
        return len(slots), {s for s in slots if isinstance(s, int)}

    async def first_order_taken(self, user_id: str) -> bool:
        return await self.collection.find_one({"first_order_slot": user_id}, {"_id": 1}) is not None

    async def claim(
        self, usage: Usage, slot: int | None, campaign_slot: int | None = None
    ) -> Claim:
        events = self._encode(usage.events, usage.version)
        document = self.to_document(usage)
        document["slot"] = slot_key(usage.id, slot)
        if usage.campaign_id:
            # Unique index campaign_slot_unique: the campaign's per-user limit, in this insert.
            document["campaign_slot"] = slot_key(usage.id, campaign_slot)
        if usage.first_order:
            # Unique (sparse) index first_order_unique: one first-order usage per user.
            document["first_order_slot"] = usage.user_id
        document["aborted"] = {}
        try:
            await self.collection.insert_one({**document, **outbox_fields(events, nested=True)})
        except DuplicateKeyError:
            return await self._after_collision(usage, document, events)
        usage.events.clear()
        self._on_events_written()
        return Claim(CLAIMED)

    async def _after_collision(
        self, usage: Usage, document: Document, events: list[OutboxEntry]
    ) -> Claim:
        stored = await self.collection.find_one({"_id": usage.id})
        if stored is None:
            return Claim(SLOT_TAKEN)  # the collision was on the per-user slot
        if stored.get("status") != ABANDONED:
            if stored.get("attempt") == usage.attempt:
                usage.events.clear()
                self._on_events_written()
                return Claim(CLAIMED)  # our own write, retried after a lost reply
            return Claim(EXISTS, self.from_document(stored))
        # A rolled-back earlier attempt left the id fenced: take it over unless we are fenced.
        replacement = {
            **document,
            "aborted": stored.get("aborted") or {},
            **outbox_fields(events, nested=True),
        }
        try:
            taken = await self.collection.replace_one(
                {
                    "_id": usage.id,
                    "status": ABANDONED,
                    f"aborted.{usage.attempt}": {"$exists": False},
                },
                replacement,
            )
        except DuplicateKeyError:
            return Claim(SLOT_TAKEN)
        if taken.matched_count == 1:
            usage.events.clear()
            self._on_events_written()
            return Claim(CLAIMED)
        stored = await self.collection.find_one({"_id": usage.id})
        if stored is not None and stored.get("status") != ABANDONED:
            return Claim(EXISTS, self.from_document(stored))
        return Claim(FENCED)

    async def release(self, usage: Usage) -> bool:
        changes: Document = {
            "status": RELEASED,
            "slot": f"r:{usage.id}",
            "release": {
                "reason": usage.release_reason,
                "at": optional_to_millis(usage.released_at),
                "by": usage.released_by,
            },
            "version": usage.version,
            **outbox_fields(self._encode(usage.events, usage.version), nested=False),
        }
        if usage.campaign_id:
            changes["campaign_slot"] = f"r:{usage.id}"  # frees the campaign slot in this write
        result = await self.collection.update_one(
            {"_id": usage.id, "status": ACTIVE, f"aborted.{usage.released_by}": {"$exists": False}},
            # The release frees the first-order slot in the same write as the per-user slot.
            {"$set": changes, "$unset": {"first_order_slot": ""}},
        )
        if result.matched_count != 1:
            return False
        usage.events.clear()
        self._on_events_written()
        return True

    async def fence_redeem(
        self, redemption_id: str, attempt: str, promo_code_id: str, user_id: str
    ) -> Usage | None:
        placeholder = {
            "promo_id": promo_code_id,
            "user_id": user_id,
            "status": ABANDONED,
            "slot": f"a:{redemption_id}",
            "sort_key": "",
            "aborted": {attempt: True},
        }
        return await self._unless_written(redemption_id, placeholder, {f"aborted.{attempt}": True})

    async def written_attempts(self, redemption_ids: list[str]) -> dict[str, str]:
        cursor = self.collection.find(
            {"_id": {"$in": redemption_ids}, "status": {"$in": [ACTIVE, RELEASED]}},
            {"attempt": 1},
        )
        return {d["_id"]: d.get("attempt", "") async for d in cursor}

    async def void(self, redemption_id: str) -> Usage | None:
        placeholder = {
            "promo_id": "",
            "user_id": "",
            "status": VOIDED,
            "slot": f"v:{redemption_id}",
            "sort_key": "",
            "aborted": {},
        }
        # Fenced attempts only: void it, filtered on ABANDONED so that a take-over by a new
        # attempt (claim's filtered replace) and this write exclude each other.
        return await self._unless_written(
            redemption_id, placeholder, {"status": VOIDED, "slot": f"v:{redemption_id}"}
        )

    async def _unless_written(
        self, redemption_id: str, placeholder: Document, on_abandoned: Document
    ) -> Usage | None:
        """Hold the usage's id with `placeholder`, or `$set` `on_abandoned` on the ABANDONED
        document there; a usage written by an attempt wins and is returned. None once held.

        insert_one, not an upsert: the unique _id decides against a usage written at the same
        moment (it then wins)."""
        while True:
            stored = await self.collection.find_one({"_id": redemption_id})
            if stored is None:
                try:
                    await self.collection.insert_one({"_id": redemption_id, **placeholder})
                except DuplicateKeyError:
                    continue  # written meanwhile: look again
                return None
            status = stored.get("status")
            if status == VOIDED:
                return None  # no attempt can ever write here
            if status != ABANDONED:
                return self.from_document(stored)
            changed = await self.collection.update_one(
                {"_id": redemption_id, "status": ABANDONED}, {"$set": on_abandoned}
            )
            if changed.matched_count == 1:
                return None

    async def fence_release(self, redemption_id: str, attempt: str) -> Usage | None:
        fenced = await self.collection.update_one(
            {"_id": redemption_id, "status": ACTIVE}, {"$set": {f"aborted.{attempt}": True}}
        )
        if fenced.matched_count == 1:
            return None
        return await self.get(redemption_id)

    async def list_page(
        self, query: UsageQuery, after_key: str | None, size: int
    ) -> tuple[list[Usage], str | None]:
        filter_: Document = {"status": query.status or {"$in": [ACTIVE, RELEASED]}}
        # `$eq`: served by by_code/by_user on the stand-in too (see active_slots).
        if query.promo_code_id:
            filter_["promo_id"] = {"$eq": query.promo_code_id}
        if query.user_id:
            filter_["user_id"] = {"$eq": query.user_id}
        if after_key is not None:
            filter_["sort_key"] = {"$gt": after_key}
        cursor = self.collection.find(filter_).sort("sort_key", 1).limit(size + 1)
        documents = [d async for d in cursor]
        usages = [self.from_document(d) for d in documents[:size]]
        more = len(documents) > size and bool(usages)
        return usages, (documents[size - 1]["sort_key"] if more else None)
