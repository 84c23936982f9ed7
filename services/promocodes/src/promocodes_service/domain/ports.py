"""What the promo-code use cases need from the outside world, as abstract ports.

Every write is a single-document atomic operation; the filters described here are the whole
concurrency story (no multi-document transactions).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from datetime import datetime

from promo_libs.repository import Repository
from promocodes_service.domain.campaign import Campaign
from promocodes_service.domain.model import PromoCode, Reservation, Usage


class PromoCodeExists(Exception):
    """Another code has the same normalized text."""


class VersionConflict(Exception):
    """The code changed between our read and our write (or a guard no longer holds)."""


@dataclass(frozen=True, slots=True)
class CodeQuery:
    active: bool | None = None
    valid_at: datetime | None = None
    code_prefix: str = ""
    batch_id: str = ""


@dataclass(frozen=True, slots=True)
class UsageQuery:
    promo_code_id: str = ""
    user_id: str = ""
    status: str = ""  # "" = ACTIVE or RELEASED


CLAIMED = "claimed"
SLOT_TAKEN = "slot_taken"
EXISTS = "exists"
FENCED = "fenced"


@dataclass(frozen=True, slots=True)
class Claim:
    outcome: str  # CLAIMED, SLOT_TAKEN, EXISTS (another usage holds the id) or FENCED
    existing: Usage | None = None


BUILDING = "BUILDING"
LIVE = "LIVE"


@dataclass(frozen=True, slots=True)
class BatchRecord:
    """A GeneratePromoCodes request: its codes are staged (invisible, their events held back)
    while BUILDING; the write that makes it LIVE is the one moment they all become real."""

    request_id: str
    batch_id: str
    fingerprint: str
    state: str
    created_at: datetime


class PromoCodeRepository(Repository[PromoCode]):
    @abc.abstractmethod
    async def get(self, code_id: str) -> PromoCode | None: ...

    @abc.abstractmethod
    async def get_by_code(self, code: str) -> PromoCode | None:
        """By normalized (upper-case) text."""

    @abc.abstractmethod
    async def add(self, promo: PromoCode) -> None:
        """Stores a new code with its events; PromoCodeExists on a duplicate text."""

    @abc.abstractmethod
    async def add_batch(self, promos: list[PromoCode], first_seq: int) -> set[str]:
        """Stages the codes whose text is free (their texts taken, the codes invisible, their
        events held back), numbered from `first_seq` in order; returns the texts that were taken
        (those codes are not stored)."""

    @abc.abstractmethod
    async def begin_batch(
        self, request_id: str, batch_id: str, fingerprint: str, now: datetime
    ) -> BatchRecord:
        """The batch of `request_id`: a new BUILDING one, or the one stored before."""

    @abc.abstractmethod
    async def batch_codes(self, batch_id: str) -> list[str]:
        """The texts of the batch's codes (staged or live), in the order they were drawn."""

    @abc.abstractmethod
    async def commit_batch(self, batch: BatchRecord) -> None:
        """Makes the batch LIVE (one write: from then on every code of it is visible and
        redeemable), then releases the codes' events to the relay. Idempotent."""

    @abc.abstractmethod
    async def drop_batch(self, batch: BatchRecord) -> None:
        """Deletes a BUILDING batch and its staged codes (their events were never published)."""

    @abc.abstractmethod
    async def drop_abandoned_batches(self, begun_before: datetime) -> int:
        """Drops the BUILDING batches begun before `begun_before` (their request died and was
        never retried): their staged codes were never visible, and free their texts."""

    @abc.abstractmethod
    async def finish_committed_batches(self) -> int:
        """Completes `commit_batch` for LIVE batches whose codes are still staged (a crash right
        after the commit); returns how many."""

    @abc.abstractmethod
    async def save(self, promo: PromoCode, expected_version: int, require_unused: bool) -> None:
        """Stores the rules and events if the stored version is `expected_version`, its counters
        still fit the new limits (uses <= max_uses, discount_granted <= budget) and, when
        `require_unused`, it was never redeemed. VersionConflict otherwise."""

    @abc.abstractmethod
    async def list_page(
        self, query: CodeQuery, after_code: str | None, size: int
    ) -> tuple[list[PromoCode], str | None]:
        """Codes in ascending text order after `after_code`; the last text when there is more."""

    @abc.abstractmethod
    async def reserve(self, promo: PromoCode, redemption_id: str, reservation: Reservation) -> bool:
        """Redeem step 1, one atomic update, filtered on: rules still at promo.version, active,
        inside the window at reservation.at, uses < max_uses, discount_granted + discount <=
        budget, no reservation for this redemption id. Increments uses, discount_granted,
        pending_count and redeemed_total and stores the reservation. False when not matched."""

    @abc.abstractmethod
    async def begin_release(
        self, code_id: str, redemption_id: str, reservation: Reservation
    ) -> bool:
        """Release step 1: stores the reservation (kind RELEASE) if none exists for the id."""

    @abc.abstractmethod
    async def settle(
        self, code_id: str, redemption_id: str, attempt: str, give_back: int | None
    ) -> bool:
        """Removes the reservation of `attempt` (exactly once: filtered on it); with `give_back`,
        also returns one use and that much discount. False when it was already settled."""

    @abc.abstractmethod
    async def with_pending(self, limit: int) -> list[PromoCode]:
        """Codes holding reservations."""


class CampaignRepository(Repository[Campaign]):
    @abc.abstractmethod
    async def get(self, campaign_id: str) -> Campaign | None: ...

    @abc.abstractmethod
    async def add(self, campaign: Campaign) -> None:
        """Stores a new campaign (its id is fresh)."""

    @abc.abstractmethod
    async def save(
        self, campaign: Campaign, expected_version: int, require_unused: bool = False
    ) -> None:
        """Stores the rules if the stored version is `expected_version`, the counters still fit
        the new limits (uses <= max_uses, discount_granted <= budget) and, when
        `require_unused`, nothing was ever reserved on it: one conditional write, so a
        redemption counted between our read and our write can never end above a lowered limit
        nor escape a new per-user one. VersionConflict otherwise."""

    @abc.abstractmethod
    async def list_page(self, after_id: str | None, size: int) -> tuple[list[Campaign], str | None]:
        """Campaigns in ascending id order after `after_id`; the last id when there is more."""

    # The redemption protocol's steps on the campaign (service_layer/redemption.py): the same
    # reservation map and fencing by attempt as on a code (PromoCodeRepository).

    @abc.abstractmethod
    async def reserve(
        self, campaign: Campaign, redemption_id: str, reservation: Reservation
    ) -> bool:
        """Step "reserve campaign", one atomic update filtered on: rules still at
        campaign.version, inside the window at reservation.at, uses < max_uses, discount_granted
        + discount <= budget, no reservation for this redemption id. Increments uses,
        discount_granted, pending_count and redeemed_total and stores the reservation (naming the
        code in `promo_code_id`). False when not matched."""

    @abc.abstractmethod
    async def begin_release(
        self, campaign_id: str, redemption_id: str, reservation: Reservation
    ) -> bool:
        """Release's first step on the campaign: stores the reservation (kind RELEASE) if none
        exists for the id."""

    @abc.abstractmethod
    async def settle(
        self, campaign_id: str, redemption_id: str, attempt: str, give_back: int | None
    ) -> bool:
        """Step "settle campaign": removes the reservation of `attempt` (exactly once: filtered
        on it); with `give_back`, also returns one use and that much discount. False when it was
        already settled."""

    @abc.abstractmethod
    async def with_pending(self, limit: int) -> list[Campaign]:
        """Campaigns holding reservations."""


class UsageRepository(Repository[Usage]):
    @abc.abstractmethod
    async def get(self, redemption_id: str) -> Usage | None:
        """Any usage document, ABANDONED ones included."""

    @abc.abstractmethod
    async def active_slots(self, promo_code_id: str, user_id: str) -> tuple[int, set[int]]:
        """The user's number of ACTIVE usages of the code and the numbered slots they hold."""

    @abc.abstractmethod
    async def campaign_slots(self, campaign_id: str, user_id: str) -> tuple[int, set[int]]:
        """The user's number of ACTIVE usages of the campaign's codes and the numbered campaign
        slots they hold."""

    @abc.abstractmethod
    async def first_order_taken(self, user_id: str) -> bool:
        """Whether an ACTIVE usage holds the user's one first-order slot (of any code)."""

    @abc.abstractmethod
    async def claim(
        self, usage: Usage, slot: int | None, campaign_slot: int | None = None
    ) -> Claim:
        """Redeem step 2 ("write usage"): writes the usage (with its events) under its id,
        holding per-user slot `slot` (None: no per-user limit), for a code of a campaign the
        campaign slot `campaign_slot` of the user (None: the campaign has no per-user limit)
        and, when `usage.first_order`, the user's one first-order slot; SLOT_TAKEN when any of
        them is held. An ABANDONED document with the id is
        taken over unless it fences `usage.attempt` out.

        First order only stays true under concurrency because the slot is a unique key of the
        usage document itself: two concurrent first orders of one user insert two usages with
        the same slot value, and the unique index lets exactly one in. No second document is
        kept in step, so there is no crash window: the usage and its slot are one write."""

    @abc.abstractmethod
    async def release(self, usage: Usage) -> bool:
        """Release step 2: stores the RELEASED usage and its events, frees its slot; filtered on
        ACTIVE and on `usage.released_by` not being fenced out. False when not matched."""

    @abc.abstractmethod
    async def fence_redeem(
        self, redemption_id: str, attempt: str, promo_code_id: str, user_id: str
    ) -> Usage | None:
        """The sweep: makes sure reservation `attempt` can never write its usage. Returns the
        visible usage already stored under the id (None: fenced, nothing was written)."""

    @abc.abstractmethod
    async def written_attempts(self, redemption_ids: list[str]) -> dict[str, str]:
        """The attempt that wrote each visible usage among `redemption_ids` (absent: none)."""

    @abc.abstractmethod
    async def void(self, redemption_id: str) -> Usage | None:
        """Release of an id with no visible usage: stores a VOIDED tombstone under the id (turning
        an ABANDONED one into it), so that no attempt can ever write a usage there. Returns the
        visible usage when one is stored under the id after all (None: the id is void)."""

    @abc.abstractmethod
    async def fence_release(self, redemption_id: str, attempt: str) -> Usage | None:
        """The sweep: if the usage is still ACTIVE, fences release `attempt` out and returns None;
        otherwise returns the usage as stored."""

    @abc.abstractmethod
    async def list_page(
        self, query: UsageQuery, after_key: str | None, size: int
    ) -> tuple[list[Usage], str | None]:
        """Visible usages in (create time, id) order; the last sort key when there is more."""


def usage_sort_key(created_at: datetime, usage_id: str) -> str:
    """One string ordering usages by create time, then id (keyset pagination on one field)."""
    return f"{created_at.strftime('%Y%m%d%H%M%S')}{created_at.microsecond // 1000:03d}|{usage_id}"
