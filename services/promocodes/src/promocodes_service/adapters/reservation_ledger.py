"""The reservation ledger a code document and a campaign document share (I1).

Both hold the counters `uses` and `discount_granted` of their ACTIVE redemptions plus the
reservations in flight, those reservations as a map `pending.<redemption id>`, and
`pending_count` so that the sweep finds them through an index. Each step of the redemption
protocol (services/promocodes/README.md, "Campaigns") is one atomic update here whose filter is
the whole condition: a reservation is taken only while the limits still have room, and settled
only by the attempt that holds it.
"""

from __future__ import annotations

import abc
from typing import Generic, TypeVar

from pymongo.asynchronous.collection import AsyncCollection

from promo_libs.mongo.connection import Document
from promo_libs.mongo.times import from_millis, optional_from_millis, optional_to_millis, to_millis
from promocodes_service.domain.model import Reservation

HolderT = TypeVar("HolderT")


def limits_fit(max_uses: int | None, budget: int | None) -> Document:
    """The filter "the counters fit these limits": a limit is never stored below what is
    granted, even when a redemption lands between the caller's check and this write."""
    fit: Document = {}
    if max_uses is not None:
        fit["uses"] = {"$lte": max_uses}
    if budget is not None:
        fit["discount_granted"] = {"$lte": budget}
    return fit


def room_for(reservation: Reservation, max_uses: int | None, budget: int | None) -> Document:
    """The filter "one more use of this discount still fits the limits"."""
    room: Document = {}
    if max_uses is not None:
        room["uses"] = {"$lt": max_uses}
    if budget is not None:
        room["discount_granted"] = {"$lte": budget - reservation.discount}
    return room


def reservation_document(reservation: Reservation) -> Document:
    return {
        "at": to_millis(reservation.at),
        "attempt": reservation.attempt,
        "kind": reservation.kind,
        "user_id": reservation.user_id,
        "discount": reservation.discount,
        "until": optional_to_millis(reservation.until),
        "campaign_id": reservation.campaign_id,
        "promo_code_id": reservation.promo_code_id,
    }


def reservations_from_document(document: Document) -> dict[str, Reservation]:
    """The `pending` map of a code or a campaign."""
    return {
        key: Reservation(
            attempt=value["attempt"],
            kind=value["kind"],
            user_id=value["user_id"],
            discount=value["discount"],
            at=from_millis(value["at"]),
            until=optional_from_millis(value.get("until")),
            campaign_id=value.get("campaign_id") or "",
            promo_code_id=value.get("promo_code_id") or "",
        )
        for key, value in (document.get("pending") or {}).items()
    }


class ReservationLedger(abc.ABC, Generic[HolderT]):
    """The ledger's writes, mixed into the repository of the document that holds it."""

    collection: AsyncCollection[Document]

    @abc.abstractmethod
    def from_document(self, document: Document) -> HolderT: ...

    async def _reserve_where(
        self, query: Document, redemption_id: str, reservation: Reservation
    ) -> bool:
        """Take one use and the discount, and hold the reservation, if `query` (the holder's
        version, window and room, see `room_for`) still matches."""
        result = await self.collection.update_one(
            {**query, f"pending.{redemption_id}": {"$exists": False}},
            {
                "$inc": {
                    "uses": 1,
                    "discount_granted": reservation.discount,
                    "pending_count": 1,
                    "redeemed_total": 1,
                },
                "$set": {f"pending.{redemption_id}": reservation_document(reservation)},
            },
        )
        return result.matched_count == 1

    async def begin_release(
        self, holder_id: str, redemption_id: str, reservation: Reservation
    ) -> bool:
        result = await self.collection.update_one(
            {"_id": holder_id, f"pending.{redemption_id}": {"$exists": False}},
            {
                "$inc": {"pending_count": 1},
                "$set": {f"pending.{redemption_id}": reservation_document(reservation)},
            },
        )
        return result.matched_count == 1

    async def settle(
        self, holder_id: str, redemption_id: str, attempt: str, give_back: int | None
    ) -> bool:
        """End the reservation `attempt` holds; `give_back` is the discount of a use that did
        not happen (or was released), None when the use stands."""
        increments = {"pending_count": -1}
        if give_back is not None:
            increments.update({"uses": -1, "discount_granted": -give_back})
        result = await self.collection.update_one(
            {"_id": holder_id, f"pending.{redemption_id}.attempt": attempt},
            {"$unset": {f"pending.{redemption_id}": ""}, "$inc": increments},
        )
        return result.matched_count == 1

    async def with_pending(self, limit: int) -> list[HolderT]:
        cursor = self.collection.find({"pending_count": {"$gt": 0}}).limit(limit)
        return [self.from_document(d) async for d in cursor]
