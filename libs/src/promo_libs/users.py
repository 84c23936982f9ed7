"""A user as the other services know it, and the port they ask UserService through.

One snapshot for every service: users' events carry it, and promocodes and orders take it
from UserService and copy it into their own events and documents (DESIGN.md: events carry the
denormalized snapshot the analytics rows need). No I/O here: the gRPC adapter is
promo_libs.grpc.users.GrpcUserDirectory, and each service's unit tests have a fake.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from datetime import datetime

from promo_libs import errors

DEPENDENCY = "users"


@dataclass(frozen=True, slots=True)
class UserSnapshot:
    """The user's attributes at one moment (never the password hash). `created_at` is None only
    in an older stored copy that predates it."""

    id: str
    email: str
    display_name: str
    active: bool
    created_at: datetime | None
    deleted_at: datetime | None


def users_unavailable() -> errors.Unavailable:
    """What `UserDirectory.get_user` raises when UserService cannot tell."""
    return errors.Unavailable(
        "the user service did not answer", "DEPENDENCY_UNAVAILABLE", {"dependency": DEPENDENCY}
    )


class UserDirectory(abc.ABC):
    """UserService, as promocodes and orders need it.

    One failure contract for both: `get_user` returns the user, None when there is no such user
    (NOT_FOUND, or an id UserService cannot parse), and raises `errors.Unavailable` (reason
    DEPENDENCY_UNAVAILABLE, dependency "users"; `users_unavailable()`) when UserService gives
    no usable answer (down, deadline, overloaded). Not an "outcome unknown": a lookup is a read
    and changes nothing, so there is no outcome to be unsure of -- the caller cannot tell
    whether the user exists, and the only thing to do is to retry later, which is what
    UNAVAILABLE tells its own caller. "Outcome unknown" (orders' OutcomeUnknown) stays for
    writes such as Redeem, where a retry must carry the same idempotency key.
    """

    @abc.abstractmethod
    async def get_user(self, user_id: str) -> UserSnapshot | None: ...

    @abc.abstractmethod
    async def ping(self) -> bool:
        """Whether UserService serves (a health probe of the caller)."""

    async def active_user(self, user_id: str) -> UserSnapshot:
        """The user a redemption or an order is for, read from UserService (`require_active`)."""
        return require_active(user_id, await self.get_user(user_id))


def require_active(user_id: str, user: UserSnapshot | None) -> UserSnapshot:
    """`user` as the one a redemption or an order is for: NOT_FOUND USER_NOT_FOUND when there
    is none, FAILED_PRECONDITION USER_INACTIVE when it is suspended or deleted. One check for a
    user read here and one a trusted caller passed (RedeemPromoCodeRequest.user)."""
    if user is None:
        raise errors.NotFound(
            f"user {user_id} does not exist", "USER_NOT_FOUND", {"user_id": user_id}
        )
    if not user.active:
        raise errors.FailedPrecondition(
            f"user {user_id} is not active", "USER_INACTIVE", {"user_id": user_id}
        )
    return user
