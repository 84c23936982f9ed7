"""Every field of every UserService request given bad values: a clear status, never INTERNAL,
and nothing written."""

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2

from devstack.service import ServiceProcess
from promo.v1 import users_pb2, users_pb2_grpc
from promo_libs.grpc.errors import bad_request, error_info

PASSWORD = "correct horse battery"
UNKNOWN_ID = "0123456789abcdef01234567"
# The longest string a request can carry under the 64 KiB receive limit (oversized: below).
HUGE = "x" * 60_000

Call = Callable[[users_pb2_grpc.UserServiceStub, str], Awaitable[Any]]


@pytest.fixture
async def stub(users_service: ServiceProcess) -> AsyncIterator[users_pb2_grpc.UserServiceStub]:
    async with users_service.channel() as channel:
        yield users_pb2_grpc.UserServiceStub(channel)


@pytest.fixture
async def storefront_stub(
    users_service: ServiceProcess,
) -> AsyncIterator[users_pb2_grpc.UserServiceStub]:
    """Log-in is the storefront's alone (users_service.entrypoints.policy)."""
    async with users_service.channel(identity="storefront") as channel:
        yield users_pb2_grpc.UserServiceStub(channel)


def create(email: str = "", password: str = PASSWORD, name: str = "Ok") -> Call:
    def call(stub: users_pb2_grpc.UserServiceStub, existing_id: str) -> Awaitable[Any]:
        return stub.CreateUser(
            users_pb2.CreateUserRequest(
                user=users_pb2.User(
                    email=email or f"new.{uuid.uuid4().hex[:8]}@example.com", display_name=name
                ),
                password=password,
            )
        )

    return call


def update(paths: list[str], user_id: str | None = None, **fields: Any) -> Call:
    password = fields.pop("password", "")

    def call(stub: users_pb2_grpc.UserServiceStub, existing_id: str) -> Awaitable[Any]:
        return stub.UpdateUser(
            users_pb2.UpdateUserRequest(
                user=users_pb2.User(id=existing_id if user_id is None else user_id, **fields),
                update_mask=field_mask_pb2.FieldMask(paths=paths),
                password=password,
            )
        )

    return call


def get(user_id: str) -> Call:
    return lambda stub, _: stub.GetUser(users_pb2.GetUserRequest(id=user_id))


def delete(user_id: str) -> Call:
    return lambda stub, _: stub.DeleteUser(users_pb2.DeleteUserRequest(id=user_id))


def list_users(page_size: int = 0, token: str = "") -> Call:
    return lambda stub, _: stub.ListUsers(
        users_pb2.ListUsersRequest(page_size=page_size, page_token=token)
    )


def authenticate(email: str, password: str) -> Call:
    return lambda stub, _: stub.AuthenticateUser(
        users_pb2.AuthenticateUserRequest(email=email, password=password)
    )


INVALID = grpc.StatusCode.INVALID_ARGUMENT
CASES: list[tuple[str, Call, grpc.StatusCode, str]] = [
    # (case, call, status, offending field for INVALID_ARGUMENT or reason otherwise)
    ("create: empty email", create(email=" "), INVALID, "user.email"),
    ("create: malformed email", create(email="not-an-email"), INVALID, "user.email"),
    ("create: email without domain", create(email="a@"), INVALID, "user.email"),
    ("create: email too long", create(email="a" * 300 + "@example.com"), INVALID, "user.email"),
    ("create: huge email", create(email=HUGE), INVALID, "user.email"),
    ("create: empty password", create(password=""), INVALID, "password"),
    ("create: short password", create(password="short"), INVALID, "password"),
    ("create: weak password", create(password="aaaaaaaaaaaaaa"), INVALID, "password"),
    ("create: common password", create(password="password123"), INVALID, "password"),
    ("create: huge password", create(password=HUGE), INVALID, "password"),
    ("create: name too long", create(name="n" * 101), INVALID, "user.display_name"),
    ("create: name with control chars", create(name="a\x07b"), INVALID, "user.display_name"),
    ("get: empty id", get(""), INVALID, "id"),
    ("get: malformed id", get("../../etc/passwd"), INVALID, "id"),
    ("get: huge id", get(HUGE), INVALID, "id"),
    ("get: unknown id", get(UNKNOWN_ID), grpc.StatusCode.NOT_FOUND, "USER_NOT_FOUND"),
    ("list: negative page size", list_users(page_size=-1), INVALID, "page_size"),
    ("list: garbage token", list_users(token="%%%not-a-token"), INVALID, "page_token"),
    ("list: forged token", list_users(token="eyJhIjoxfQ"), INVALID, "page_token"),
    ("list: huge token", list_users(token=HUGE), INVALID, "page_token"),
    ("update: no mask", update([]), INVALID, "update_mask"),
    ("update: unknown path", update(["password_hash"]), INVALID, "update_mask"),
    ("update: output-only path", update(["create_time"]), INVALID, "update_mask"),
    ("update: empty id", update(["display_name"], user_id=""), INVALID, "user.id"),
    ("update: bad email", update(["email"], email="bad"), INVALID, "user.email"),
    ("update: weak password", update(["password"], password="short"), INVALID, "password"),
    (
        "update: long name",
        update(["display_name"], display_name="n" * 500),
        INVALID,
        "user.display_name",
    ),
    (
        "update: unknown id",
        update(["display_name"], user_id=UNKNOWN_ID, display_name="x"),
        grpc.StatusCode.NOT_FOUND,
        "USER_NOT_FOUND",
    ),
    ("delete: empty id", delete(""), INVALID, "id"),
    ("delete: unknown id", delete(UNKNOWN_ID), grpc.StatusCode.NOT_FOUND, "USER_NOT_FOUND"),
    ("auth: empty email", authenticate("", PASSWORD), INVALID, "email"),
    ("auth: empty password", authenticate("a@example.com", ""), INVALID, "password"),
    ("auth: huge password", authenticate("a@example.com", HUGE), INVALID, "password"),
    (
        "auth: unknown email",
        authenticate("nobody@example.com", PASSWORD),
        grpc.StatusCode.UNAUTHENTICATED,
        "INVALID_CREDENTIALS",
    ),
]


def snapshot(users_db: Any) -> list[dict[str, Any]]:
    return list(users_db.users.find({}, {"outbox": 0, "outbox_pending": 0}).sort("_id", 1))


@pytest.mark.parametrize(("case", "call", "code", "detail"), CASES, ids=[c[0] for c in CASES])
async def test_bad_input_is_refused_clearly_and_writes_nothing(
    stub: users_pb2_grpc.UserServiceStub,
    storefront_stub: users_pb2_grpc.UserServiceStub,
    users_db: Any,
    case: str,
    call: Call,
    code: grpc.StatusCode,
    detail: str,
) -> None:
    existing = await stub.CreateUser(
        users_pb2.CreateUserRequest(
            user=users_pb2.User(email=f"keep.{uuid.uuid4().hex[:8]}@example.com"),
            password=PASSWORD,
        )
    )
    before = snapshot(users_db)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(storefront_stub if case.startswith("auth:") else stub, existing.id)
    error = caught.value
    assert error.code() == code, f"{case}: {error.code()} {error.details()}"
    if code == INVALID:
        violations = bad_request(error)
        assert violations is not None, case
        assert detail in [v.field for v in violations.field_violations], case
        assert all(v.description for v in violations.field_violations)
    else:
        info = error_info(error)
        assert info is not None and info.reason == detail and info.domain == "promo.v1"
    assert snapshot(users_db) == before, f"{case} changed the database"


async def test_a_request_beyond_the_receive_limit_is_refused_before_parsing(
    stub: users_pb2_grpc.UserServiceStub, users_db: Any
) -> None:
    # 64 KiB by default (GRPC_MAX_RECEIVE_BYTES): the largest CreateUser is a few hundred bytes.
    before = snapshot(users_db)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await create(name="x" * 70_000)(stub, "")
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, caught.value.details()
    assert snapshot(users_db) == before
