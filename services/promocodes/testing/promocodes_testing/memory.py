"""In-memory repositories and user directory for unit tests: the same contracts as the real
adapters, each write atomic (no await inside it)."""

from __future__ import annotations

import copy
import dataclasses
from datetime import UTC, datetime

from promo_libs.users import UserDirectory, UserSnapshot, users_unavailable
from promo_libs_testing.memory import InMemoryRepository
from promocodes_service.domain.campaign import Campaign
from promocodes_service.domain.events import CampaignEvent, CodeEvent, UsageEvent
from promocodes_service.domain.model import (
    ABANDONED,
    ACTIVE,
    RELEASED,
    VOIDED,
    PromoCode,
    Reservation,
    Usage,
)
from promocodes_service.domain.ports import (
    BUILDING,
    CLAIMED,
    EXISTS,
    FENCED,
    LIVE,
    SLOT_TAKEN,
    BatchRecord,
    CampaignRepository,
    Claim,
    CodeQuery,
    PromoCodeExists,
    PromoCodeRepository,
    UsageQuery,
    UsageRepository,
    VersionConflict,
    usage_sort_key,
)


class InMemoryPromoCodeRepository(InMemoryRepository[PromoCode], PromoCodeRepository):
    def __init__(self) -> None:
        super().__init__()
        self.published: list[CodeEvent] = []
        self.staged: dict[str, tuple[str, int, list[CodeEvent]]] = {}  # id: batch, seq, events
        self.batches: dict[str, BatchRecord] = {}

    def _visible(self, promo: PromoCode | None) -> PromoCode | None:
        if promo is None or promo.id not in self.staged:
            return copy.deepcopy(promo)
        batch = next((b for b in self.batches.values() if b.batch_id == promo.batch_id), None)
        return copy.deepcopy(promo) if batch is not None and batch.state == LIVE else None

    async def get(self, code_id: str) -> PromoCode | None:
        return self._visible(self.items.get(code_id))

    async def get_by_code(self, code: str) -> PromoCode | None:
        return self._visible(next((p for p in self.items.values() if p.code == code), None))

    def _insert(self, promo: PromoCode, seq: int | None = None) -> bool:
        if any(p.code == promo.code for p in self.items.values()):
            return False
        if seq is None:
            self.published.extend(promo.events)
        else:
            self.staged[promo.id] = (promo.batch_id, seq, list(promo.events))
        promo.events.clear()
        self.items[promo.id] = copy.deepcopy(promo)
        return True

    async def add(self, promo: PromoCode) -> None:
        if not self._insert(promo):
            raise PromoCodeExists(promo.code)

    async def add_batch(self, promos: list[PromoCode], first_seq: int) -> set[str]:
        return {p.code for n, p in enumerate(promos) if not self._insert(p, first_seq + n)}

    async def begin_batch(
        self, request_id: str, batch_id: str, fingerprint: str, now: datetime
    ) -> BatchRecord:
        return self.batches.setdefault(
            request_id, BatchRecord(request_id, batch_id, fingerprint, BUILDING, now)
        )

    async def drop_abandoned_batches(self, begun_before: datetime) -> int:
        old = [
            b for b in self.batches.values() if b.state == BUILDING and b.created_at < begun_before
        ]
        for batch in old:
            await self.drop_batch(batch)
        return len(old)

    async def batch_codes(self, batch_id: str) -> list[str]:
        mine = [p for p in self.items.values() if p.batch_id == batch_id]
        order = {p.id: self.staged.get(p.id, ("", n, []))[1] for n, p in enumerate(mine)}
        return [p.code for p in sorted(mine, key=lambda p: order[p.id])]

    async def commit_batch(self, batch: BatchRecord) -> None:
        self.batches[batch.request_id] = dataclasses.replace(batch, state=LIVE)
        for code_id, (batch_id, _, events) in sorted(self.staged.items(), key=lambda i: i[1][1]):
            if batch_id == batch.batch_id:
                self.published.extend(events)
                del self.staged[code_id]

    async def drop_batch(self, batch: BatchRecord) -> None:
        for code_id in [k for k, v in self.staged.items() if v[0] == batch.batch_id]:
            del self.staged[code_id]
            del self.items[code_id]
        self.batches.pop(batch.request_id, None)

    async def finish_committed_batches(self) -> int:
        live = [b for b in self.batches.values() if b.state == LIVE]
        unfinished = [b for b in live if any(v[0] == b.batch_id for v in self.staged.values())]
        for batch in unfinished:
            await self.commit_batch(batch)
        return len(unfinished)

    async def save(self, promo: PromoCode, expected_version: int, require_unused: bool) -> None:
        stored = self.items.get(promo.id)
        r = promo.rules
        if (
            stored is None
            or stored.version != expected_version
            or (r.max_uses is not None and stored.uses > r.max_uses)
            or (r.budget is not None and stored.discount_granted > r.budget)
            or (require_unused and stored.redeemed_total > 0)
        ):
            raise VersionConflict(promo.id)
        self.published.extend(promo.events)
        promo.events.clear()
        stored.rules, stored.version, stored.updated_at = r, promo.version, promo.updated_at

    async def list_page(
        self, query: CodeQuery, after_code: str | None, size: int
    ) -> tuple[list[PromoCode], str | None]:
        def matches(p: PromoCode) -> bool:
            r = p.rules
            t = query.valid_at
            return (
                p.id not in self.staged
                and (query.active is None or r.active == query.active)
                and (not query.batch_id or p.batch_id == query.batch_id)
                and p.code.startswith(query.code_prefix)
                and (after_code is None or p.code > after_code)
                and (t is None or ((r.valid_from is None or r.valid_from <= t)
                                   and (r.valid_until is None or t < r.valid_until)))
            )  # fmt: skip

        found = sorted((p for p in self.items.values() if matches(p)), key=lambda p: p.code)
        page = [copy.deepcopy(p) for p in found[:size]]
        return page, (page[-1].code if len(found) > size and page else None)

    async def reserve(self, promo: PromoCode, redemption_id: str, reservation: Reservation) -> bool:
        stored = self.items.get(promo.id)
        if stored is None or stored.version != promo.version or redemption_id in stored.pending:
            return False
        r, at = stored.rules, reservation.at
        if (
            not r.active
            or (r.valid_from is not None and at < r.valid_from)
            or (r.valid_until is not None and at >= r.valid_until)
            or (r.max_uses is not None and stored.uses >= r.max_uses)
            or (r.budget is not None and stored.discount_granted + reservation.discount > r.budget)
        ):
            return False
        stored.uses += 1
        stored.discount_granted += reservation.discount
        stored.redeemed_total += 1
        stored.pending[redemption_id] = reservation
        return True

    async def begin_release(
        self, code_id: str, redemption_id: str, reservation: Reservation
    ) -> bool:
        stored = self.items.get(code_id)
        if stored is None or redemption_id in stored.pending:
            return False
        stored.pending[redemption_id] = reservation
        return True

    async def settle(
        self, code_id: str, redemption_id: str, attempt: str, give_back: int | None
    ) -> bool:
        stored = self.items.get(code_id)
        held = stored.pending.get(redemption_id) if stored else None
        if stored is None or held is None or held.attempt != attempt:
            return False
        del stored.pending[redemption_id]
        if give_back is not None:
            stored.uses -= 1
            stored.discount_granted -= give_back
        return True

    async def with_pending(self, limit: int) -> list[PromoCode]:
        return [copy.deepcopy(p) for p in self.items.values() if p.pending][:limit]


class InMemoryCampaignRepository(InMemoryRepository[Campaign], CampaignRepository):
    def __init__(self) -> None:
        super().__init__()
        # (event, aggregate version) in the order they were written, as the outbox holds them.
        self.published: list[tuple[CampaignEvent, int]] = []

    async def get(self, campaign_id: str) -> Campaign | None:
        return await self.find_by_id(campaign_id)

    async def add(self, campaign: Campaign) -> None:
        events, campaign.events = campaign.events, []  # the stored copy holds none
        await self.create(campaign)
        self.published.extend((e, campaign.version) for e in events)

    async def save(
        self, campaign: Campaign, expected_version: int, require_unused: bool = False
    ) -> None:
        stored = self.items.get(campaign.id)
        r = campaign.rules
        if (
            stored is None
            or stored.version != expected_version
            or (require_unused and stored.redeemed_total > 0)
            or (r.max_uses is not None and stored.uses > r.max_uses)
            or (r.budget is not None and stored.discount_granted > r.budget)
        ):
            raise VersionConflict(campaign.id)
        stored.rules, stored.version, stored.updated_at = r, campaign.version, campaign.updated_at
        self.published.extend((e, campaign.version) for e in campaign.events)
        campaign.events.clear()

    async def list_page(self, after_id: str | None, size: int) -> tuple[list[Campaign], str | None]:
        ids = sorted(i for i in self.items if after_id is None or i > after_id)
        page = [copy.deepcopy(self.items[i]) for i in ids[:size]]
        return page, (page[-1].id if len(ids) > size and page else None)

    async def reserve(
        self, campaign: Campaign, redemption_id: str, reservation: Reservation
    ) -> bool:
        stored = self.items.get(campaign.id)
        if stored is None or stored.version != campaign.version or redemption_id in stored.pending:
            return False
        r, at = stored.rules, reservation.at
        if (
            (r.valid_from is not None and at < r.valid_from)
            or (r.valid_until is not None and at >= r.valid_until)
            or (r.max_uses is not None and stored.uses >= r.max_uses)
            or (r.budget is not None and stored.discount_granted + reservation.discount > r.budget)
        ):
            return False
        stored.uses += 1
        stored.discount_granted += reservation.discount
        stored.redeemed_total += 1
        stored.pending[redemption_id] = reservation
        return True

    async def begin_release(
        self, campaign_id: str, redemption_id: str, reservation: Reservation
    ) -> bool:
        stored = self.items.get(campaign_id)
        if stored is None or redemption_id in stored.pending:
            return False
        stored.pending[redemption_id] = reservation
        return True

    async def settle(
        self, campaign_id: str, redemption_id: str, attempt: str, give_back: int | None
    ) -> bool:
        stored = self.items.get(campaign_id)
        held = stored.pending.get(redemption_id) if stored else None
        if stored is None or held is None or held.attempt != attempt:
            return False
        del stored.pending[redemption_id]
        if give_back is not None:
            stored.uses -= 1
            stored.discount_granted -= give_back
        return True

    async def with_pending(self, limit: int) -> list[Campaign]:
        return [copy.deepcopy(c) for c in self.items.values() if c.pending][:limit]


@dataclasses.dataclass
class _Stored:
    usage: Usage
    slot: int | str
    aborted: set[str] = dataclasses.field(default_factory=set)
    campaign_slot: int | str | None = None  # None: not a campaign's code


class InMemoryUsageRepository(InMemoryRepository[Usage], UsageRepository):
    def __init__(self) -> None:
        super().__init__()
        self.stored: dict[str, _Stored] = {}
        self.published: list[UsageEvent] = []

    def _sync(self) -> None:
        self.items = {k: v.usage for k, v in self.stored.items()}

    def _slot_free(self, usage: Usage, slot: int | str) -> bool:
        return not any(
            s.usage.promo_code_id == usage.promo_code_id
            and s.usage.user_id == usage.user_id
            and s.slot == slot
            for s in self.stored.values()
        )

    async def get(self, redemption_id: str) -> Usage | None:
        stored = self.stored.get(redemption_id)
        return copy.deepcopy(stored.usage) if stored else None

    async def active_slots(self, promo_code_id: str, user_id: str) -> tuple[int, set[int]]:
        held = [
            s.slot
            for s in self.stored.values()
            if s.usage.promo_code_id == promo_code_id
            and s.usage.user_id == user_id
            and s.usage.status == ACTIVE
        ]
        return len(held), {s for s in held if isinstance(s, int)}

    async def campaign_slots(self, campaign_id: str, user_id: str) -> tuple[int, set[int]]:
        held = [
            s.campaign_slot
            for s in self.stored.values()
            if s.campaign_slot is not None
            and s.usage.campaign_id == campaign_id
            and s.usage.user_id == user_id
            and s.usage.status == ACTIVE
        ]
        return len(held), {s for s in held if isinstance(s, int)}

    def _campaign_slot_free(self, usage: Usage, slot: int | str) -> bool:
        return not any(
            s.campaign_slot == slot
            and s.usage.campaign_id == usage.campaign_id
            and s.usage.user_id == usage.user_id
            for s in self.stored.values()
        )

    async def first_order_taken(self, user_id: str) -> bool:
        return any(
            s.usage.user_id == user_id and s.usage.first_order and s.usage.status == ACTIVE
            for s in self.stored.values()
        )

    async def claim(
        self, usage: Usage, slot: int | None, campaign_slot: int | None = None
    ) -> Claim:
        key: int | str = f"u:{usage.id}" if slot is None else slot
        campaign_key: int | str | None = None
        if usage.campaign_id:
            campaign_key = f"u:{usage.id}" if campaign_slot is None else campaign_slot
        existing = self.stored.get(usage.id)
        if existing is not None and existing.usage.status != ABANDONED:
            if existing.usage.attempt == usage.attempt:
                return Claim(CLAIMED)
            return Claim(EXISTS, copy.deepcopy(existing.usage))
        if existing is not None and usage.attempt in existing.aborted:
            return Claim(FENCED)
        if not self._slot_free(usage, key):
            return Claim(SLOT_TAKEN)
        if campaign_key is not None and not self._campaign_slot_free(usage, campaign_key):
            return Claim(SLOT_TAKEN)
        if usage.first_order and await self.first_order_taken(usage.user_id):
            return Claim(SLOT_TAKEN)
        self.published.extend(usage.events)
        usage.events.clear()
        self.stored[usage.id] = _Stored(
            copy.deepcopy(usage), key, existing.aborted if existing else set(), campaign_key
        )
        self._sync()
        return Claim(CLAIMED)

    async def release(self, usage: Usage) -> bool:
        stored = self.stored.get(usage.id)
        if stored is None or stored.usage.status != ACTIVE or usage.released_by in stored.aborted:
            return False
        self.published.extend(usage.events)
        usage.events.clear()
        stored.usage = copy.deepcopy(usage)
        stored.slot = f"r:{usage.id}"
        if stored.campaign_slot is not None:
            stored.campaign_slot = f"r:{usage.id}"
        self._sync()
        return True

    async def fence_redeem(
        self, redemption_id: str, attempt: str, promo_code_id: str, user_id: str
    ) -> Usage | None:
        stored = self.stored.get(redemption_id)
        if stored is not None and stored.usage.status == VOIDED:
            return None
        if stored is not None and stored.usage.status != ABANDONED:
            return copy.deepcopy(stored.usage)
        if stored is None:
            tombstone = Usage(
                id=redemption_id,
                promo_code_id=promo_code_id,
                code="",
                user_id=user_id,
                currency="",
                order_amount=0,
                discount=0,
                created_at=rules_epoch(),
                user=UserSnapshot(user_id, "", "", False, None, None),
                status=ABANDONED,
            )
            stored = self.stored[redemption_id] = _Stored(tombstone, f"a:{redemption_id}")
            self._sync()
        stored.aborted.add(attempt)
        return None

    async def written_attempts(self, redemption_ids: list[str]) -> dict[str, str]:
        return {
            rid: stored.usage.attempt
            for rid in redemption_ids
            if (stored := self.stored.get(rid)) is not None and stored.usage.visible
        }

    async def void(self, redemption_id: str) -> Usage | None:
        stored = self.stored.get(redemption_id)
        if stored is not None and stored.usage.visible:
            return copy.deepcopy(stored.usage)
        if stored is None:
            tombstone = Usage(
                id=redemption_id,
                promo_code_id="",
                code="",
                user_id="",
                currency="",
                order_amount=0,
                discount=0,
                created_at=rules_epoch(),
                user=UserSnapshot("", "", "", False, None, None),
                status=VOIDED,
            )
            self.stored[redemption_id] = _Stored(tombstone, f"v:{redemption_id}")
        else:
            stored.usage.status = VOIDED
            stored.slot = f"v:{redemption_id}"
        self._sync()
        return None

    async def fence_release(self, redemption_id: str, attempt: str) -> Usage | None:
        stored = self.stored.get(redemption_id)
        if stored is not None and stored.usage.status == ACTIVE:
            stored.aborted.add(attempt)
            return None
        return copy.deepcopy(stored.usage) if stored else None

    async def list_page(
        self, query: UsageQuery, after_key: str | None, size: int
    ) -> tuple[list[Usage], str | None]:
        wanted = {query.status} if query.status else {ACTIVE, RELEASED}
        found = sorted(
            (
                s.usage
                for s in self.stored.values()
                if s.usage.status in wanted
                and (not query.promo_code_id or s.usage.promo_code_id == query.promo_code_id)
                and (not query.user_id or s.usage.user_id == query.user_id)
                and (
                    after_key is None or usage_sort_key(s.usage.created_at, s.usage.id) > after_key
                )
            ),
            key=lambda u: usage_sort_key(u.created_at, u.id),
        )
        page = [copy.deepcopy(u) for u in found[:size]]
        last = page[-1] if len(found) > size and page else None
        return page, (usage_sort_key(last.created_at, last.id) if last else None)


def rules_epoch() -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC)


class FakeUserDirectory(UserDirectory):
    def __init__(self) -> None:
        self.users: dict[str, UserSnapshot] = {}
        self.down = False
        self.calls = 0

    def add(self, user_id: str, active: bool = True) -> UserSnapshot:
        user = UserSnapshot(user_id, f"{user_id}@example.com", user_id, active, rules_epoch(), None)
        self.users[user_id] = user
        return user

    async def get_user(self, user_id: str) -> UserSnapshot | None:
        self.calls += 1
        if self.down:
            raise users_unavailable()
        return self.users.get(user_id)

    async def ping(self) -> bool:
        return not self.down
