"""What the order use cases need from the outside world, as abstract ports."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from datetime import datetime

from orders_service.domain.events import OrderLine, PromoCodeSnapshot
from orders_service.domain.model import Money, Order
from promo_libs.repository import Repository
from promo_libs.users import UserSnapshot


class OutcomeUnknown(Exception):
    """A dependency did not answer (deadline, unavailable, in progress): what it did is unknown,
    and the same request may be sent again with the same idempotency key."""

    def __init__(self, dependency: str, detail: str = "") -> None:
        super().__init__(f"{dependency}: {detail}" if detail else dependency)
        self.dependency = dependency


@dataclass(frozen=True, slots=True)
class Redemption:
    """PromoCodeService.RedeemPromoCode's request; `redemption_id` is the order id."""

    redemption_id: str
    code: str
    user_id: str
    amount: Money
    lines: tuple[OrderLine, ...] = ()
    shipping_minor: int = 0
    first_order: bool = False  # the user had no confirmed order when the order was placed
    # The user as read from UserService for this very request (None: PromoCodeService reads
    # it). Never the order's stored copy: a sweep or retry later must not redeem for a user
    # suspended since.
    user: UserSnapshot | None = None


@dataclass(frozen=True, slots=True)
class Redeemed:
    usage_id: str
    promo_code_id: str
    code: str
    discount: Money
    # The code's rules as redeemed, for the order's events (only id and code when the
    # promo-code service did not say).
    promo: PromoCodeSnapshot
    line_shares: tuple[int, ...] = ()
    shipping_share: int = 0


@dataclass(frozen=True, slots=True)
class Refused:
    """The code does not apply: `reason` is an ErrorReason name without its prefix."""

    reason: str
    promo_code_id: str = ""


RedeemOutcome = Redeemed | Refused


class PromoCodes(abc.ABC):
    @abc.abstractmethod
    async def redeem(self, redemption: Redemption) -> RedeemOutcome:
        """Idempotent by redemption id; OutcomeUnknown when the answer never came. Never takes
        longer than the current deadline (promo_libs.deadlines), waiting for a turn included."""

    @abc.abstractmethod
    async def release(self, redemption_id: str, reason: str) -> bool:
        """Gives the redemption back (idempotent). False when there is no such redemption;
        OutcomeUnknown when the answer never came."""


class DuplicateIdempotencyKey(Exception):
    pass


class VersionConflict(Exception):
    """The order changed between our read and our write."""


@dataclass(frozen=True, slots=True)
class OrderQuery:
    user_id: str = ""
    status: str = ""
    created_from: datetime | None = None
    created_until: datetime | None = None


@dataclass(frozen=True, slots=True)
class OrderCursor:
    """Position in the newest-first listing: (create time, id) of the last order returned."""

    created_at: datetime
    order_id: str


class OrderRepository(Repository[Order]):
    """The base repository of the original spec, plus what the order use cases need."""

    @abc.abstractmethod
    async def get(self, order_id: str) -> Order | None: ...

    @abc.abstractmethod
    async def get_by_idempotency_key(self, user_id: str, key: str) -> Order | None:
        """The order `user_id` placed under `key` (keys are scoped per user)."""

    @abc.abstractmethod
    async def add(self, order: Order) -> None:
        """Stores a new order with its pending events; DuplicateIdempotencyKey when the key is
        taken (the unique index decides, not a read)."""

    @abc.abstractmethod
    async def save(self, order: Order) -> None:
        """Stores the order and its pending events if the stored version is still
        `order.stored_version`; VersionConflict otherwise."""

    @abc.abstractmethod
    async def list_page(
        self, query: OrderQuery, after: OrderCursor | None, size: int
    ) -> tuple[list[Order], OrderCursor | None]:
        """Newest first (create time, then id, both descending); the cursor when more remain."""

    @abc.abstractmethod
    async def has_confirmed_order(self, user_id: str) -> bool:
        """Whether the user has a CONFIRMED order (first-order-only codes need none)."""

    @abc.abstractmethod
    async def due_for_sweep(self, now: datetime, limit: int) -> list[Order]:
        """Orders whose `sweep_due_at` is at or before `now`, oldest due first."""
