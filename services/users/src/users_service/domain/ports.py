"""What the user use cases need from the outside world, as abstract ports."""

from __future__ import annotations

import abc

from promo_libs.repository import Repository
from users_service.domain.model import User


class PasswordHasher(abc.ABC):
    @abc.abstractmethod
    async def hash(self, password: str) -> str: ...

    @abc.abstractmethod
    async def verify(self, password_hash: str, password: str) -> bool:
        """True when `password` matches; takes the same time whatever the outcome."""

    @abc.abstractmethod
    def needs_rehash(self, password_hash: str) -> bool: ...

    @abc.abstractmethod
    async def burn(self, password: str) -> None:
        """Spends the time of one verification, so unknown emails are not faster to reject."""


class EmailTaken(Exception):
    pass


class VersionConflict(Exception):
    """The user changed between our read and our write."""


class UserRepository(Repository[User]):
    """The base repository of the original spec, plus what the user use cases need."""

    @abc.abstractmethod
    async def get(self, user_id: str) -> User | None: ...

    @abc.abstractmethod
    async def get_by_email(self, email_key: str) -> User | None: ...

    @abc.abstractmethod
    async def add(self, user: User) -> None:
        """Stores a new user with its pending events; EmailTaken when the email is in use."""

    @abc.abstractmethod
    async def save(self, user: User) -> None:
        """Stores changes and pending events if the stored version is still `user.version`,
        then bumps it; VersionConflict otherwise, EmailTaken on a duplicate email."""

    @abc.abstractmethod
    async def list_page(
        self, active: bool | None, after_id: str | None, size: int
    ) -> tuple[list[User], str | None]: ...
