"""What happened to a user, in the past tense: recorded by the aggregate, sent via the outbox."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from promo_libs.users import UserSnapshot


@dataclass(frozen=True, slots=True)
class UserCreated:
    user: UserSnapshot
    occurred_at: datetime


@dataclass(frozen=True, slots=True)
class UserUpdated:
    user: UserSnapshot
    changed_fields: tuple[str, ...]
    occurred_at: datetime


@dataclass(frozen=True, slots=True)
class UserDeactivated:
    user: UserSnapshot
    occurred_at: datetime


UserEvent = UserCreated | UserUpdated | UserDeactivated
