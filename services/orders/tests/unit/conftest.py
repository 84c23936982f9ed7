"""Unit-test fixtures of the order service: fakes of UserService and PromoCodeService."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from orders_service.domain.events import PromoCodeSnapshot
from orders_service.domain.model import Money
from orders_service.domain.ports import (
    OutcomeUnknown,
    PromoCodes,
    Redeemed,
    RedeemOutcome,
    Redemption,
    Refused,
)
from orders_service.service_layer.orders import Orders
from orders_testing.memory import InMemoryOrderRepository
from promo_libs.users import UserDirectory, UserSnapshot, users_unavailable

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
STALE = timedelta(seconds=30)


class FakeUsers(UserDirectory):
    def __init__(self) -> None:
        self.users: dict[str, UserSnapshot] = {}
        self.down = False

    def add(self, user_id: str, active: bool = True) -> UserSnapshot:
        user = UserSnapshot(user_id, f"{user_id}@example.com", user_id, active, NOW, None)
        self.users[user_id] = user
        return user

    async def get_user(self, user_id: str) -> UserSnapshot | None:
        if self.down:
            raise users_unavailable()
        return self.users.get(user_id)

    async def ping(self) -> bool:
        return not self.down


@dataclass
class FakeCode:
    id: str
    code: str
    fixed: int
    max_uses: int | None = None
    refuse_with: str = ""


@dataclass
class FakePromoCodes(PromoCodes):
    """Redeem/Release with the idempotency and limits the saga relies on."""

    codes: dict[str, FakeCode] = field(default_factory=dict)
    # redemption id -> (code, user id, active)
    usages: dict[str, tuple[str, str, bool]] = field(default_factory=dict)
    down: bool = False
    lose_answers: int = 0  # redeem/release does its work, then the answer is "lost"
    redeem_calls: int = 0
    release_calls: int = 0
    users_passed: list[UserSnapshot | None] = field(default_factory=list)  # Redemption.user

    def add(self, code: str, fixed: int = 100, max_uses: int | None = None) -> FakeCode:
        promo = FakeCode(f"p{len(self.codes) + 1}", code, fixed, max_uses)
        self.codes[code] = promo
        return promo

    def active_usages(self, code: str | None = None) -> list[str]:
        return [rid for rid, (c, _, on) in self.usages.items() if on and code in (None, c)]

    async def redeem(self, redemption: Redemption) -> RedeemOutcome:
        self.redeem_calls += 1
        self.users_passed.append(redemption.user)
        if self.down:
            raise OutcomeUnknown("promocodes", "UNAVAILABLE")
        promo = self.codes.get(redemption.code)
        if promo is None:
            return Refused("PROMO_CODE_NOT_FOUND")
        stored = self.usages.get(redemption.redemption_id)
        if stored is None:
            if promo.refuse_with:
                return Refused(promo.refuse_with, promo.id)
            if promo.max_uses is not None and len(self.active_usages(promo.code)) >= promo.max_uses:
                return Refused("PROMO_CODE_EXHAUSTED", promo.id)
            self.usages[redemption.redemption_id] = (promo.code, redemption.user_id, True)
        if self.lose_answers:
            self.lose_answers -= 1
            raise OutcomeUnknown("promocodes", "DEADLINE_EXCEEDED")
        discount = min(promo.fixed, redemption.amount.amount_minor)
        return Redeemed(
            redemption.redemption_id,
            promo.id,
            promo.code,
            Money(redemption.amount.currency, discount),
            PromoCodeSnapshot(
                promo.id, promo.code, "FIXED_AMOUNT", fixed_amount_minor=promo.fixed, currency="EUR"
            ),
        )

    async def release(self, redemption_id: str, reason: str) -> bool:
        self.release_calls += 1
        if self.down:
            raise OutcomeUnknown("promocodes", "UNAVAILABLE")
        stored = self.usages.get(redemption_id)
        if stored is None:
            return False
        self.usages[redemption_id] = (stored[0], stored[1], False)
        if self.lose_answers:
            self.lose_answers -= 1
            raise OutcomeUnknown("promocodes", "DEADLINE_EXCEEDED")
        return True


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@pytest.fixture
def repo() -> InMemoryOrderRepository:
    return InMemoryOrderRepository()


@pytest.fixture
def users() -> FakeUsers:
    fake = FakeUsers()
    fake.add("alice")
    fake.add("bob")
    fake.add("ghost", active=False)
    return fake


@pytest.fixture
def promo_codes() -> FakePromoCodes:
    fake = FakePromoCodes()
    fake.add("SAVE10", fixed=1000)
    return fake


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def orders(
    repo: InMemoryOrderRepository, users: FakeUsers, promo_codes: FakePromoCodes, clock: Clock
) -> Orders:
    ids = (f"o{n:04d}" for n in itertools.count(1))
    return Orders(repo, users, promo_codes, lambda: next(ids), clock, STALE)
