"""The account use cases. Each validates its command, applies domain rules, stores the result with
its events in one write, and raises promo_libs.errors for everything the caller must hear."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from promo_libs import errors
from promo_libs.errors import checked
from promo_libs.identifiers import check_id
from promo_libs.identity import acts_for_a_user, require_acting_for
from promo_libs.pagination import page_request
from users_service.domain import rules
from users_service.domain.commands import (
    AuthenticateUser,
    CreateUser,
    DeleteUser,
    ListUsers,
    UpdateUser,
)
from users_service.domain.model import User, UserDeleted
from users_service.domain.ports import EmailTaken, PasswordHasher, UserRepository, VersionConflict

UPDATABLE_FIELDS = frozenset({"email", "display_name", "password", "active"})
_UPDATE_ATTEMPTS = 5


@dataclass(frozen=True, slots=True)
class UserPage:
    users: list[User]
    next_page_token: str


def _email_taken() -> errors.AlreadyExists:
    return errors.AlreadyExists("a user with this email already exists", "EMAIL_ALREADY_EXISTS")


def _not_found(user_id: str) -> errors.NotFound:
    return errors.NotFound(f"user {user_id} does not exist", "USER_NOT_FOUND", {"id": user_id})


def check_user_id(user_id: str, field: str) -> None:
    try:
        check_id(user_id, "user id")
    except ValueError as exc:
        raise errors.InvalidArgument([errors.FieldViolation(field, str(exc))]) from None


@dataclass(frozen=True, slots=True)
class Login:
    """A successful log-in: the user, and the token calls on their behalf carry."""

    user: User
    token: str = ""
    token_expires: datetime | None = None


class TokenIssuer(Protocol):
    """Signs user tokens (promo_libs.user_tokens.UserTokenIssuer, or a fake)."""

    def issue(self, user_id: str, now: datetime) -> tuple[str, datetime]: ...


class Accounts:
    """The account use cases. A call made for one end user (the storefront's, with a user
    token) reaches only that user's account, and changes its password only with the current
    one (promo_libs.identity.require_acting_for; DESIGN.md I7)."""

    def __init__(
        self,
        users: UserRepository,
        hasher: PasswordHasher,
        new_id: Callable[[], str],
        clock: Callable[[], datetime],
        *,
        tokens: TokenIssuer | None = None,
    ) -> None:
        self._users = users
        self._hasher = hasher
        self._new_id = new_id
        self._clock = clock
        self.tokens = tokens

    async def create_user(self, command: CreateUser) -> User:
        violations = errors.Violations()
        email = checked(violations, "user.email", rules.normalize_email, command.email)
        checked(violations, "password", rules.check_password, command.password)
        name = checked(
            violations, "user.display_name", rules.normalize_display_name, command.display_name
        )
        violations.raise_if_any()
        assert email is not None and name is not None
        if await self._users.get_by_email(rules.email_key(email)) is not None:
            raise _email_taken()  # cheap early answer; the unique index is the real guard
        password_hash = await self._hasher.hash(command.password)
        user = User.register(self._new_id(), email, name, password_hash, self._clock())
        try:
            await self._users.add(user)
        except EmailTaken:
            raise _email_taken() from None
        return user

    async def get_user(self, user_id: str) -> User:
        check_user_id(user_id, "id")
        require_acting_for(user_id)
        user = await self._users.get(user_id)
        if user is None:
            raise _not_found(user_id)
        return user

    async def list_users(self, query: ListUsers) -> UserPage:
        page = page_request(query.page_size, query.page_token, {"active": query.active})
        users, last_id = await self._users.list_page(query.active, page.after_id, page.size)
        return UserPage(users, page.next_token(last_id) if last_id else "")

    async def update_user(self, command: UpdateUser) -> User:
        violations = errors.Violations()
        if not command.fields:
            violations.add("update_mask", "must name at least one field")
        for unknown in sorted(command.fields - UPDATABLE_FIELDS):
            violations.add("update_mask", f"'{unknown}' cannot be updated")
        email = name = None
        if "email" in command.fields:
            email = checked(violations, "user.email", rules.normalize_email, command.email)
        if "display_name" in command.fields:
            name = checked(
                violations, "user.display_name", rules.normalize_display_name, command.display_name
            )
        if "password" in command.fields:
            checked(violations, "password", rules.check_password, command.password)
        check_user_id(command.user_id, "user.id")
        violations.raise_if_any()
        require_acting_for(command.user_id)
        if acts_for_a_user():
            await self._check_self_service(command)
        password_hash = (
            await self._hasher.hash(command.password) if "password" in command.fields else None
        )
        active = command.active if "active" in command.fields else None
        for _ in range(_UPDATE_ATTEMPTS):
            user = await self.get_user(command.user_id)
            try:
                changed = user.update(
                    self._clock(),
                    email=email,
                    display_name=name,
                    password_hash=password_hash,
                    active=active,
                )
            except UserDeleted:
                # UPDATE_NOT_ALLOWED, as users.proto promises: USER_INACTIVE would tell the
                # caller that inactive users cannot be changed, yet a suspended one can be.
                raise errors.FailedPrecondition(
                    "a deleted user cannot be changed", "UPDATE_NOT_ALLOWED", {"id": user.id}
                ) from None
            if not changed:
                return user
            try:
                await self._users.save(user)
            except EmailTaken:
                raise _email_taken() from None
            except VersionConflict:
                continue  # someone else changed the user meanwhile: apply ours on top
            return user
        raise errors.Aborted("the user is being changed concurrently; retry", "CONCURRENT_UPDATE")

    async def delete_user(self, command: DeleteUser) -> User:
        for _ in range(_UPDATE_ATTEMPTS):
            user = await self.get_user(command.user_id)
            if not user.delete(self._clock()):
                return user  # deleting twice changes nothing
            try:
                await self._users.save(user)
            except VersionConflict:
                continue
            return user
        raise errors.Aborted("the user is being changed concurrently; retry", "CONCURRENT_UPDATE")

    async def _check_self_service(self, command: UpdateUser) -> None:
        """A user may not reactivate themselves, and changes a password only by knowing it:
        a stolen session alone must not be enough to take the account over."""
        if "active" in command.fields:
            raise errors.PermissionDenied(
                "only staff may change whether an account is active", "UPDATE_NOT_ALLOWED"
            )
        if "password" not in command.fields:
            return
        user = await self.get_user(command.user_id)
        if not command.current_password or not await self._hasher.verify(
            user.password_hash, command.current_password[: rules.MAX_PASSWORD_LENGTH + 1]
        ):
            raise errors.Unauthenticated("the current password is wrong", "INVALID_CREDENTIALS")

    async def log_in(self, command: AuthenticateUser) -> Login:
        """`authenticate`, and a signed token for the calls made on the user's behalf."""
        user = await self.authenticate(command)
        if self.tokens is None:
            return Login(user)
        token, expires = self.tokens.issue(user.id, self._clock())
        return Login(user, token, expires)

    async def authenticate(self, command: AuthenticateUser) -> User:
        """One answer for unknown email, wrong password and inactive account, in the same time."""
        violations = errors.Violations()
        if not command.email:
            violations.add("email", "is required")
        if not command.password:
            violations.add("password", "is required")
        elif len(command.password) > rules.MAX_PASSWORD_LENGTH:
            violations.add("password", f"must be at most {rules.MAX_PASSWORD_LENGTH} characters")
        violations.raise_if_any()
        refused = errors.Unauthenticated("invalid email or password", "INVALID_CREDENTIALS")
        try:
            key = rules.email_key(rules.normalize_email(command.email))
        except ValueError:
            await self._hasher.burn(command.password)
            raise refused from None
        user = await self._users.get_by_email(key)
        if user is None:
            await self._hasher.burn(command.password)
            raise refused
        if not await self._hasher.verify(user.password_hash, command.password):
            raise refused
        if not user.can_authenticate():
            raise refused
        if self._hasher.needs_rehash(user.password_hash):
            await self._rehash(user, command.password)
        return user

    async def _rehash(self, user: User, password: str) -> None:
        user.rehash_password(await self._hasher.hash(password))
        # If the user changed meanwhile, the next login rehashes.
        with contextlib.suppress(VersionConflict):
            await self._users.save(user)
