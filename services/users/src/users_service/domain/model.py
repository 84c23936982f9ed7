"""The User aggregate: state, invariants and the events its changes record."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from promo_libs.users import UserSnapshot
from users_service.domain.events import (
    UserCreated,
    UserDeactivated,
    UserEvent,
    UserUpdated,
)
from users_service.domain.rules import email_key


class UserDeleted(Exception):
    """A deleted account is kept for history but never changes again."""


@dataclass
class User:
    id: str
    email: str
    display_name: str
    password_hash: str
    active: bool
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None = None
    version: int = 1
    events: list[UserEvent] = field(default_factory=list, compare=False, repr=False)

    @property
    def email_key(self) -> str:
        return email_key(self.email)

    @property
    def deleted(self) -> bool:
        return self.deleted_at is not None

    @classmethod
    def register(
        cls, user_id: str, email: str, display_name: str, password_hash: str, now: datetime
    ) -> User:
        user = cls(
            id=user_id,
            email=email,
            display_name=display_name,
            password_hash=password_hash,
            active=True,
            created_at=now,
            updated_at=now,
        )
        user.events.append(UserCreated(user.snapshot(), now))
        return user

    def snapshot(self) -> UserSnapshot:
        return UserSnapshot(
            id=self.id,
            email=self.email,
            display_name=self.display_name,
            active=self.active,
            created_at=self.created_at,
            deleted_at=self.deleted_at,
        )

    def update(
        self,
        now: datetime,
        *,
        email: str | None = None,
        display_name: str | None = None,
        password_hash: str | None = None,
        active: bool | None = None,
    ) -> tuple[str, ...]:
        """Applies the given changes; returns the names of the fields that really changed."""
        if self.deleted:
            raise UserDeleted(self.id)
        changed: list[str] = []
        if email is not None and email != self.email:
            self.email = email
            changed.append("email")
        if display_name is not None and display_name != self.display_name:
            self.display_name = display_name
            changed.append("display_name")
        if password_hash is not None:
            self.password_hash = password_hash
            changed.append("password")
        if active is not None and active != self.active:
            self.active = active
            changed.append("active")
        if changed:
            self.updated_at = now
            self.events.append(UserUpdated(self.snapshot(), tuple(changed), now))
        return tuple(changed)

    def delete(self, now: datetime) -> bool:
        """Soft delete: deactivated for good, kept for the history that refers to it."""
        if self.deleted:
            return False
        self.active = False
        self.deleted_at = now
        self.updated_at = now
        self.events.append(UserDeactivated(self.snapshot(), now))
        return True

    def can_authenticate(self) -> bool:
        return self.active and not self.deleted

    def rehash_password(self, password_hash: str) -> None:
        """A stronger hash of the same password: not a change anyone needs to hear about."""
        self.password_hash = password_hash
