"""The account use cases against in-memory fakes: rules, events and error reasons."""

import itertools
from datetime import UTC, datetime
from typing import Any

import pytest

from promo_libs import errors
from users_service.domain.commands import (
    AuthenticateUser,
    CreateUser,
    DeleteUser,
    ListUsers,
    UpdateUser,
)
from users_service.domain.events import UserCreated, UserDeactivated, UserUpdated
from users_service.domain.ports import PasswordHasher
from users_service.service_layer.accounts import Accounts
from users_testing.memory import InMemoryUserRepository

PASSWORD = "correct horse battery"
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.fixture
def repo() -> InMemoryUserRepository:
    return InMemoryUserRepository()


@pytest.fixture
def accounts(repo: InMemoryUserRepository, hasher: PasswordHasher) -> Accounts:
    ids = (f"u{n:04d}" for n in itertools.count(1))
    return Accounts(repo, hasher, lambda: next(ids), lambda: NOW)


async def test_create_user_stores_a_hash_and_records_the_event(
    accounts: Accounts, repo: InMemoryUserRepository
) -> None:
    user = await accounts.create_user(CreateUser("Bob@Example.com", PASSWORD, " Bob "))
    assert (user.email, user.display_name, user.active) == ("Bob@example.com", "Bob", True)
    stored = repo.items[user.id]
    assert stored.password_hash != PASSWORD
    assert [type(e) for e in repo.published] == [UserCreated]


async def test_duplicate_email_in_any_case_is_already_exists(accounts: Accounts) -> None:
    await accounts.create_user(CreateUser("bob@example.com", PASSWORD))
    with pytest.raises(errors.AlreadyExists) as caught:
        await accounts.create_user(CreateUser("BOB@EXAMPLE.COM", PASSWORD))
    assert caught.value.reason == "EMAIL_ALREADY_EXISTS"


async def test_create_reports_every_bad_field_at_once(accounts: Accounts) -> None:
    with pytest.raises(errors.InvalidArgument) as caught:
        await accounts.create_user(CreateUser("nope", "short", "x" * 101))
    assert {v.field for v in caught.value.violations} == {
        "user.email",
        "password",
        "user.display_name",
    }


async def test_update_changes_only_masked_fields_and_records_them(
    accounts: Accounts, repo: InMemoryUserRepository
) -> None:
    user = await accounts.create_user(CreateUser("carol@example.com", PASSWORD, "Carol"))
    updated = await accounts.update_user(
        UpdateUser(user.id, frozenset({"display_name"}), email="ignored@x.com", display_name="C")
    )
    assert (updated.email, updated.display_name) == ("carol@example.com", "C")
    event = repo.published[-1]
    assert isinstance(event, UserUpdated) and event.changed_fields == ("display_name",)


async def test_update_without_a_real_change_records_nothing(
    accounts: Accounts, repo: InMemoryUserRepository
) -> None:
    user = await accounts.create_user(CreateUser("dave@example.com", PASSWORD, "Dave"))
    await accounts.update_user(
        UpdateUser(user.id, frozenset({"display_name"}), display_name="Dave")
    )
    assert len(repo.published) == 1


async def test_update_mask_must_name_known_fields(accounts: Accounts) -> None:
    user = await accounts.create_user(CreateUser("erin@example.com", PASSWORD))
    for fields in (frozenset(), frozenset({"password_hash"}), frozenset({"id"})):
        with pytest.raises(errors.InvalidArgument) as caught:
            await accounts.update_user(UpdateUser(user.id, fields))
        assert caught.value.violations[0].field == "update_mask"


async def test_email_change_keeps_uniqueness(accounts: Accounts) -> None:
    await accounts.create_user(CreateUser("frank@example.com", PASSWORD))
    other = await accounts.create_user(CreateUser("grace@example.com", PASSWORD))
    with pytest.raises(errors.AlreadyExists):
        await accounts.update_user(
            UpdateUser(other.id, frozenset({"email"}), email="FRANK@example.com")
        )


async def test_password_change_rehashes_and_old_password_stops_working(accounts: Accounts) -> None:
    user = await accounts.create_user(CreateUser("heidi@example.com", PASSWORD))
    await accounts.update_user(
        UpdateUser(user.id, frozenset({"password"}), password="another good secret")
    )
    with pytest.raises(errors.Unauthenticated):
        await accounts.authenticate(AuthenticateUser("heidi@example.com", PASSWORD))
    assert await accounts.authenticate(AuthenticateUser("heidi@example.com", "another good secret"))


async def test_authentication_failures_are_indistinguishable(
    accounts: Accounts, hasher: Any
) -> None:
    user = await accounts.create_user(CreateUser("ivan@example.com", PASSWORD))
    attempts = [
        AuthenticateUser("nobody@example.com", PASSWORD),
        AuthenticateUser("ivan@example.com", "wrong password!"),
        AuthenticateUser("not an email", PASSWORD),
    ]
    reasons = set()
    for attempt in attempts:
        with pytest.raises(errors.Unauthenticated) as caught:
            await accounts.authenticate(attempt)
        reasons.add((caught.value.reason, caught.value.message))
    await accounts.delete_user(DeleteUser(user.id))
    with pytest.raises(errors.Unauthenticated) as caught:
        await accounts.authenticate(AuthenticateUser("ivan@example.com", PASSWORD))
    reasons.add((caught.value.reason, caught.value.message))
    assert reasons == {("INVALID_CREDENTIALS", "invalid email or password")}
    assert hasher.burned == 2  # unknown email and malformed email cost a verification too


async def test_login_rehashes_when_the_parameters_changed(
    accounts: Accounts, repo: InMemoryUserRepository, hasher: Any
) -> None:
    user = await accounts.create_user(CreateUser("judy@example.com", PASSWORD))
    hasher.scheme = "v2"
    await accounts.authenticate(AuthenticateUser("judy@example.com", PASSWORD))
    assert repo.items[user.id].password_hash.startswith("v2$")
    assert len(repo.published) == 1  # a rehash is not a change anyone subscribes to


async def test_delete_is_a_soft_delete_and_idempotent(
    accounts: Accounts, repo: InMemoryUserRepository
) -> None:
    user = await accounts.create_user(CreateUser("kim@example.com", PASSWORD))
    deleted = await accounts.delete_user(DeleteUser(user.id))
    again = await accounts.delete_user(DeleteUser(user.id))
    assert deleted.deleted_at == NOW and not deleted.active and again.deleted_at == NOW
    assert [type(e) for e in repo.published] == [UserCreated, UserDeactivated]
    with pytest.raises(errors.FailedPrecondition) as caught:
        await accounts.update_user(UpdateUser(user.id, frozenset({"active"}), active=True))
    # What users.proto promises: a deleted user is past changing (an inactive one is not).
    assert caught.value.reason == "UPDATE_NOT_ALLOWED"
    assert (await accounts.get_user(user.id)).deleted_at == NOW


async def test_unknown_and_malformed_ids(accounts: Accounts) -> None:
    with pytest.raises(errors.NotFound) as caught:
        await accounts.get_user("abc123")
    assert caught.value.reason == "USER_NOT_FOUND"
    for bad in ("", "x" * 65, "../etc", "ünï"):
        with pytest.raises(errors.InvalidArgument):
            await accounts.get_user(bad)


async def test_list_pages_are_stable_and_filtered(accounts: Accounts) -> None:
    created = [
        await accounts.create_user(CreateUser(f"user{n}@example.com", PASSWORD)) for n in range(5)
    ]
    await accounts.delete_user(DeleteUser(created[1].id))
    seen, token = [], ""
    while True:
        page = await accounts.list_users(ListUsers(2, token, active=True))
        seen += [u.id for u in page.users]
        token = page.next_page_token
        if not token:
            break
    assert seen == [u.id for u in created if u.id != created[1].id]
    with pytest.raises(errors.InvalidArgument) as caught:
        await accounts.list_users(ListUsers(2, "garbage!", active=True))
    assert caught.value.reason == "INVALID_PAGE_TOKEN"
    first = await accounts.list_users(ListUsers(2, "", active=True))
    with pytest.raises(errors.InvalidArgument):
        await accounts.list_users(ListUsers(2, first.next_page_token, active=False))
