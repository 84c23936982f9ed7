"""PromoCodeRepository on MongoDB: collection `promo_codes`, one document per code.

The document holds the rules, the counters (`uses`, `discount_granted`, `redeemed_total`) and
the reservations in flight as a map `pending.<redemption id> = {at, attempt, kind, user_id, until,
discount}` with `pending_count`. Every write is one atomic update whose filter carries the
condition (DESIGN.md); no filter uses `$or`, `$not` or array paths (the local stand-in answers
some of those wrongly). Moments are epoch milliseconds (promo_libs.mongo.times). The rules an
operator changes live in one sub-document `rules`, always written whole, so their booleans stay
booleans on the stand-in too.

Generated batches (GeneratePromoCodes, all or nothing): codes are inserted staged (`staged:
true`, their events in `outbox` but `outbox_pending: false`, so the relay leaves them alone) under
the batch's request in `promo_code_batches` (`_id` = request id, `state` BUILDING). A staged code
is invisible (lists skip it; lookups see it only once its batch is LIVE); the one write that sets
the batch LIVE commits every code at once, after which `staged` is dropped and the events are
flagged for the relay (finished by `finish_committed_batches` if the process dies in between).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from pymongo.errors import BulkWriteError, DuplicateKeyError

from promo_libs.mongo.connection import Document
from promo_libs.mongo.repository import MongoRepository
from promo_libs.mongo.times import from_millis, optional_from_millis, optional_to_millis, to_millis
from promo_libs.outbox import OutboxEntry, outbox_fields
from promocodes_service.adapters.migrations import CODES
from promocodes_service.adapters.reservation_ledger import (
    ReservationLedger,
    limits_fit,
    reservation_document,
    reservations_from_document,
    room_for,
)
from promocodes_service.domain import cart, rules
from promocodes_service.domain.events import CodeEvent
from promocodes_service.domain.model import PromoCode, Reservation, RuleSet
from promocodes_service.domain.ports import (
    BUILDING,
    LIVE,
    BatchRecord,
    CodeQuery,
    PromoCodeExists,
    PromoCodeRepository,
    VersionConflict,
)

EncodeEvents = Callable[[Sequence[CodeEvent], int], list[OutboxEntry]]

# Open ends of the validity window, so "valid at t" is two range conditions without $or.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 12, 31, tzinfo=UTC)
_CHUNK = 1000
BATCHES = "promo_code_batches"
_DUPLICATE_KEY = 11000


def rules_document(promo: PromoCode) -> Document:
    """The `rules` sub-document."""
    r = promo.rules
    percentage = r.discount if isinstance(r.discount, rules.Percentage) else None
    fixed = r.discount if isinstance(r.discount, rules.FixedAmount) else None
    return {
        "description": r.description,
        "discount_type": "PERCENTAGE" if percentage else "FIXED_AMOUNT",
        "basis_points": percentage.basis_points if percentage else None,
        "max_discount": percentage.max_discount if percentage else None,
        "fixed_amount": fixed.amount if fixed else None,
        "currency": r.currency,
        "valid_from": optional_to_millis(r.valid_from),
        "valid_until": optional_to_millis(r.valid_until),
        "window_from": to_millis(r.valid_from or EARLIEST),
        "window_until": to_millis(r.valid_until or LATEST),
        "min_order_amount": r.min_order_amount,
        "max_uses": r.max_uses,
        "max_uses_per_user": r.max_uses_per_user,
        "budget": r.budget,
        "eligible_user_ids": list(r.eligible_user_ids),
        "active": r.active,
        "updated_at": to_millis(promo.updated_at),
        "offer": offer_document(r.offer),
    }


def offer_document(offer: cart.Offer) -> Document:
    """The cart part of the rules. Lists are sorted so an unchanged offer stores the same bytes."""
    t = offer.targeting
    return {
        "target": offer.target.value,
        "allocation": offer.allocation.value,
        "max_quantity": offer.max_quantity,
        "min_item_quantity": offer.min_item_quantity,
        "min_item_amount": offer.min_item_amount,
        "first_order_only": offer.first_order_only,
        "include_products": sorted(t.include_products),
        "include_categories": sorted(t.include_categories),
        "include_skus": sorted(t.include_skus),
        "exclude_products": sorted(t.exclude_products),
        "exclude_categories": sorted(t.exclude_categories),
        "exclude_skus": sorted(t.exclude_skus),
    }


def offer_from_document(stored: Document | None) -> cart.Offer:
    """Codes stored before carts have no `offer`: the whole order, as they always did."""
    if not stored:
        return cart.Offer()
    return cart.Offer(
        target=cart.Target(stored["target"]),
        targeting=cart.Targeting(
            **{name: frozenset(stored.get(name) or ()) for name in _TARGETING_FIELDS}
        ),
        allocation=cart.Allocation(stored["allocation"]),
        max_quantity=stored.get("max_quantity"),
        min_item_quantity=stored.get("min_item_quantity"),
        min_item_amount=stored.get("min_item_amount"),
        first_order_only=bool(stored.get("first_order_only")),
    )


_TARGETING_FIELDS = (
    "include_products",
    "include_categories",
    "include_skus",
    "exclude_products",
    "exclude_categories",
    "exclude_skus",
)


class MongoPromoCodeRepository(
    MongoRepository[PromoCode, EncodeEvents], ReservationLedger[PromoCode], PromoCodeRepository
):
    collection_name = CODES

    def to_document(self, entity: PromoCode) -> Document:
        return {
            "_id": entity.id,
            "code": entity.code,
            "batch_id": entity.batch_id,
            "campaign_id": entity.campaign_id,
            "created_at": to_millis(entity.created_at),
            "version": entity.version,
            "rules": rules_document(entity),
            "uses": entity.uses,
            "discount_granted": entity.discount_granted,
            "redeemed_total": entity.redeemed_total,
            "pending": {k: reservation_document(v) for k, v in entity.pending.items()},
            "pending_count": len(entity.pending),
        }

    def from_document(self, document: Document) -> PromoCode:
        stored: Document = document["rules"]
        discount: rules.Discount
        if stored["discount_type"] == "PERCENTAGE":
            discount = rules.Percentage(stored["basis_points"], stored.get("max_discount"))
        else:
            discount = rules.FixedAmount(stored["fixed_amount"])
        rule_set = RuleSet(
            description=stored.get("description", ""),
            discount=discount,
            currency=stored.get("currency"),
            valid_from=optional_from_millis(stored.get("valid_from")),
            valid_until=optional_from_millis(stored.get("valid_until")),
            min_order_amount=stored.get("min_order_amount"),
            max_uses=stored.get("max_uses"),
            max_uses_per_user=stored.get("max_uses_per_user"),
            budget=stored.get("budget"),
            eligible_user_ids=tuple(stored.get("eligible_user_ids") or ()),
            active=bool(stored["active"]),
            offer=offer_from_document(stored.get("offer")),
        )
        pending = reservations_from_document(document)
        return PromoCode(
            id=document["_id"],
            code=document["code"],
            rules=rule_set,
            created_at=from_millis(document["created_at"]),
            updated_at=from_millis(stored["updated_at"]),
            batch_id=document.get("batch_id", ""),
            campaign_id=document.get("campaign_id", ""),
            version=document.get("version", 1),
            uses=document.get("uses", 0),
            discount_granted=document.get("discount_granted", 0),
            redeemed_total=document.get("redeemed_total", 0),
            pending=pending,
        )

    async def get(self, code_id: str) -> PromoCode | None:
        return await self._visible(await self.collection.find_one({"_id": code_id}))

    async def get_by_code(self, code: str) -> PromoCode | None:
        return await self._visible(await self.collection.find_one({"code": code}))

    async def _visible(self, document: Document | None) -> PromoCode | None:
        if document is None:
            return None
        if document.get("staged"):
            batch = await self._batches.find_one({"batch_id": document.get("batch_id")})
            if batch is None or batch.get("state") != LIVE:
                return None  # part of a batch that is not complete: it does not exist yet
        return self.from_document(document)

    @property
    def _batches(self) -> Any:
        return self.collection.database[BATCHES]

    async def begin_batch(
        self, request_id: str, batch_id: str, fingerprint: str, now: datetime
    ) -> BatchRecord:
        with contextlib.suppress(DuplicateKeyError):  # a retry: the stored batch is the one
            await self._batches.insert_one(
                {
                    "_id": request_id,
                    "batch_id": batch_id,
                    "fingerprint": fingerprint,
                    "state": BUILDING,
                    # Text, not a boolean: the stand-in reads booleans written by $set as ints.
                    "events": "held",
                    "created_at": to_millis(now),
                }
            )
        stored = await self._batches.find_one({"_id": request_id})
        assert stored is not None
        return self._batch(stored)

    @staticmethod
    def _batch(stored: Document) -> BatchRecord:
        return BatchRecord(
            stored["_id"],
            stored["batch_id"],
            stored["fingerprint"],
            stored["state"],
            from_millis(stored.get("created_at", 0)),
        )

    async def drop_abandoned_batches(self, begun_before: datetime) -> int:
        cursor = self._batches.find(
            {"state": BUILDING, "created_at": {"$lt": to_millis(begun_before)}}
        )
        old = [self._batch(d) async for d in cursor]
        for batch in old:
            await self.drop_batch(batch)
        return len(old)

    async def batch_codes(self, batch_id: str) -> list[str]:
        cursor = self.collection.find({"batch_id": batch_id}, {"code": 1, "batch_seq": 1})
        documents = [d async for d in cursor]
        documents.sort(key=lambda d: d.get("batch_seq", 0))
        return [d["code"] for d in documents]

    async def commit_batch(self, batch: BatchRecord) -> None:
        await self._batches.update_one({"_id": batch.request_id}, {"$set": {"state": LIVE}})
        await self._finish(batch.request_id, batch.batch_id)

    async def _finish(self, request_id: str, batch_id: str) -> None:
        await self.collection.update_many(
            {"batch_id": batch_id, "staged": True},
            {"$set": {"outbox_pending": True}, "$unset": {"staged": ""}},
        )
        await self._batches.update_one({"_id": request_id}, {"$set": {"events": "released"}})
        self._on_events_written()

    async def drop_batch(self, batch: BatchRecord) -> None:
        await self.collection.delete_many({"batch_id": batch.batch_id, "staged": True})
        await self._batches.delete_one({"_id": batch.request_id, "state": BUILDING})

    async def finish_committed_batches(self) -> int:
        cursor = self._batches.find({"state": LIVE, "events": "held"})
        unfinished = [d async for d in cursor]
        for document in unfinished:
            await self._finish(document["_id"], document["batch_id"])
        return len(unfinished)

    async def add(self, promo: PromoCode) -> None:
        try:
            await self.create(promo, self._encode(promo.events, promo.version))
        except DuplicateKeyError:
            raise PromoCodeExists(promo.code) from None
        promo.events.clear()

    async def add_batch(self, promos: list[PromoCode], first_seq: int) -> set[str]:
        taken: set[str] = set()
        for start in range(0, len(promos), _CHUNK):
            chunk = promos[start : start + _CHUNK]
            documents = []
            for n, promo in enumerate(chunk):
                document = self.to_document(promo)
                document.update(
                    outbox_fields(self._encode(promo.events, promo.version), nested=True)
                )
                # Held back until the batch commits: the relay only reads flagged documents.
                document.update(
                    {"outbox_pending": False, "staged": True, "batch_seq": first_seq + start + n}
                )
                documents.append(document)
            try:
                await self.collection.insert_many(documents, ordered=False)
            except BulkWriteError as exc:
                write_errors: list[dict[str, Any]] = exc.details.get("writeErrors", [])
                if any(e.get("code") != _DUPLICATE_KEY for e in write_errors):
                    raise
                taken.update(chunk[e["index"]].code for e in write_errors)
        for promo in promos:
            promo.events.clear()
        return taken

    async def save(self, promo: PromoCode, expected_version: int, require_unused: bool) -> None:
        query: Document = {
            "_id": promo.id,
            "version": expected_version,
            **limits_fit(promo.rules.max_uses, promo.rules.budget),
        }
        if require_unused:
            query["redeemed_total"] = 0
        changes = {
            "rules": rules_document(promo),
            "version": promo.version,
            **outbox_fields(self._encode(promo.events, promo.version), nested=False),
        }
        result = await self.collection.update_one(query, {"$set": changes})
        if result.matched_count != 1:
            raise VersionConflict(promo.id)
        promo.events.clear()
        self._on_events_written()

    async def list_page(
        self, query: CodeQuery, after_code: str | None, size: int
    ) -> tuple[list[PromoCode], str | None]:
        filter_: Document = {}
        if query.active is not None:
            filter_["rules.active"] = query.active
        if query.valid_at is not None:
            at = to_millis(query.valid_at)
            filter_["rules.window_from"] = {"$lte": at}
            filter_["rules.window_until"] = {"$gt": at}
        if query.batch_id:
            filter_["batch_id"] = query.batch_id
        filter_["staged"] = {"$exists": False}  # codes of a batch still being generated
        code_range: Document = {}
        if query.code_prefix:
            code_range["$gte"] = query.code_prefix
            code_range["$lt"] = rules.prefix_upper_bound(query.code_prefix)
        if after_code is not None:
            code_range["$gt"] = after_code
        if code_range:
            filter_["code"] = code_range
        cursor = self.collection.find(filter_).sort("code", 1).limit(size + 1)
        documents = [d async for d in cursor]
        codes = [self.from_document(d) for d in documents[:size]]
        more = len(documents) > size and bool(codes)
        return codes, (codes[-1].code if more else None)

    async def reserve(self, promo: PromoCode, redemption_id: str, reservation: Reservation) -> bool:
        r = promo.rules
        query: Document = {
            "_id": promo.id,
            "version": promo.version,
            "rules.active": True,
            **room_for(reservation, r.max_uses, r.budget),
        }
        if r.valid_from is not None:
            query["rules.window_from"] = {"$lte": to_millis(reservation.at)}
        if r.valid_until is not None:
            query["rules.window_until"] = {"$gt": to_millis(reservation.at)}
        return await self._reserve_where(query, redemption_id, reservation)
