"""UserService over a real gRPC port, backed by the MongoDB stand-in."""

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2
from redis.asyncio import Redis

from devstack.service import ServiceProcess
from devstack.stack import Stack
from promo.v1 import events_pb2, users_pb2, users_pb2_grpc
from promo_libs.bus import ENVELOPE_FIELD
from promo_libs.events import USERS_STREAM
from promo_libs.grpc.errors import error_info

PASSWORD = "correct horse battery"


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


def unique_email(prefix: str = "user") -> str:
    return f"{prefix}.{uuid.uuid4().hex[:12]}@Example.com"


async def create(stub: users_pb2_grpc.UserServiceStub, email: str | None = None) -> users_pb2.User:
    return await stub.CreateUser(
        users_pb2.CreateUserRequest(
            user=users_pb2.User(email=email or unique_email(), display_name="Test"),
            password=PASSWORD,
        )
    )


async def test_account_lifecycle(
    stub: users_pb2_grpc.UserServiceStub,
    storefront_stub: users_pb2_grpc.UserServiceStub,
    users_db: Any,
) -> None:
    email = unique_email("life")
    user = await create(stub, email)
    assert user.email == email.rsplit("@", 1)[0] + "@example.com" and user.active
    assert (await stub.GetUser(users_pb2.GetUserRequest(id=user.id))) == user
    stored = users_db.users.find_one({"_id": user.id})
    assert stored["password_hash"].startswith("$argon2id$") and PASSWORD not in str(stored)

    renamed = await stub.UpdateUser(
        users_pb2.UpdateUserRequest(
            user=users_pb2.User(id=user.id, display_name="Renamed", email="ignored@x.io"),
            update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
        )
    )
    assert (renamed.display_name, renamed.email) == ("Renamed", user.email)

    authenticated = await storefront_stub.AuthenticateUser(
        users_pb2.AuthenticateUserRequest(email=email.upper(), password=PASSWORD)
    )
    assert authenticated.user.id == user.id

    deleted = await stub.DeleteUser(users_pb2.DeleteUserRequest(id=user.id))
    assert not deleted.active and deleted.HasField("delete_time")
    assert (await stub.DeleteUser(users_pb2.DeleteUserRequest(id=user.id))) == deleted
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await storefront_stub.AuthenticateUser(
            users_pb2.AuthenticateUserRequest(email=email, password=PASSWORD)
        )
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    info = error_info(refused.value)
    assert info is not None and info.reason == "INVALID_CREDENTIALS"
    with pytest.raises(grpc.aio.AioRpcError) as frozen:
        await stub.UpdateUser(
            users_pb2.UpdateUserRequest(
                user=users_pb2.User(id=user.id, display_name="Back"),
                update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
            )
        )
    assert frozen.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    info = error_info(frozen.value)
    assert info is not None and info.reason == "UPDATE_NOT_ALLOWED"


async def test_each_change_is_published_as_an_event(
    stub: users_pb2_grpc.UserServiceStub, users_db: Any, stack: Stack
) -> None:
    """The change and its event are one write; the relay then puts it on the users stream."""
    user = await create(stub)
    await stub.UpdateUser(
        users_pb2.UpdateUserRequest(
            user=users_pb2.User(id=user.id),
            update_mask=field_mask_pb2.FieldMask(paths=["password"]),
            password="a brand new secret",
        )
    )
    await stub.DeleteUser(users_pb2.DeleteUserRequest(id=user.id))
    redis = Redis(host=stack.redis_host, port=stack.redis_port, password=stack.redis_password)
    try:
        envelopes = await wait_for_events(redis, user.id, 3)
    finally:
        await redis.aclose()
    assert [e.WhichOneof("payload") for e in envelopes] == [
        "user_created",
        "user_updated",
        "user_deactivated",
    ]
    assert [e.aggregate_version for e in envelopes] == [1, 2, 3]
    assert all(e.producer == "users" and e.type.startswith("promo.v1.User") for e in envelopes)
    assert list(envelopes[1].user_updated.changed_fields) == ["password"]
    assert envelopes[2].user_deactivated.user.HasField("delete_time")
    assert b"argon2" not in b"".join(e.SerializeToString() for e in envelopes)
    # Published entries leave the document's outbox.
    await wait_until(lambda: not users_db.users.find_one({"_id": user.id})["outbox"], 10)


async def wait_for_events(
    redis: Redis, aggregate_id: str, count: int, within: float = 10.0
) -> list[events_pb2.EventEnvelope]:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        entries = await redis.xrange(USERS_STREAM)
        envelopes = [
            events_pb2.EventEnvelope.FromString(fields[ENVELOPE_FIELD]) for _, fields in entries
        ]
        mine = [e for e in envelopes if e.aggregate_id == aggregate_id]
        if len(mine) >= count or asyncio.get_running_loop().time() > deadline:
            assert len(mine) == count, f"{len(mine)} events of {aggregate_id} on the stream"
            return mine
        await asyncio.sleep(0.05)


async def wait_until(condition: Callable[[], bool], within: float) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_fifty_concurrent_sign_ups_with_one_email_create_one_user(
    stub: users_pb2_grpc.UserServiceStub, users_db: Any
) -> None:
    email = unique_email("race")
    variants = [email, email.upper(), email.lower()]
    results = await asyncio.gather(
        *(create(stub, variants[n % 3]) for n in range(50)), return_exceptions=True
    )
    created = [r for r in results if isinstance(r, users_pb2.User)]
    refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(created) == 1 and len(refused) == 49
    assert {r.code() for r in refused} == {grpc.StatusCode.ALREADY_EXISTS}
    assert {error_info(r).reason for r in refused} == {"EMAIL_ALREADY_EXISTS"}  # type: ignore[union-attr]
    assert users_db.users.count_documents({"email_key": email.casefold()}) == 1


async def test_listing_pages_through_every_user_once_in_a_stable_order(
    stub: users_pb2_grpc.UserServiceStub,
) -> None:
    mine = {(await create(stub)).id for _ in range(7)}
    seen: list[str] = []
    token = ""
    while True:
        page = await stub.ListUsers(users_pb2.ListUsersRequest(page_size=3, page_token=token))
        assert len(page.users) <= 3
        seen += [u.id for u in page.users]
        token = page.next_page_token
        if not token:
            break
    assert len(seen) == len(set(seen)) and mine <= set(seen) and seen == sorted(seen)


async def test_the_request_id_is_echoed_and_logged(
    stub: users_pb2_grpc.UserServiceStub, users_service: ServiceProcess
) -> None:
    request_id = f"req-{uuid.uuid4().hex}"
    call = stub.GetUser(
        users_pb2.GetUserRequest(id="ffffffffffffffffffffffff"),
        metadata=(("x-request-id", request_id),),
    )
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await call
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    assert ("x-request-id", request_id) in tuple(await call.initial_metadata())
    assert request_id in users_service.log_tail(200)


async def test_changing_to_a_taken_email_is_already_exists_and_changes_nothing(
    stub: users_pb2_grpc.UserServiceStub, users_db: Any
) -> None:
    first = await create(stub)
    second = await create(stub)
    # The relay changes the outbox fields on its own schedule: compare the account itself.
    account_fields = {"outbox": 0, "outbox_pending": 0}
    before = users_db.users.find_one({"_id": second.id}, account_fields)
    with pytest.raises(grpc.aio.AioRpcError) as taken:
        await stub.UpdateUser(
            users_pb2.UpdateUserRequest(
                user=users_pb2.User(id=second.id, email=first.email.upper()),
                update_mask=field_mask_pb2.FieldMask(paths=["email"]),
            )
        )
    assert taken.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert error_info(taken.value).reason == "EMAIL_ALREADY_EXISTS"  # type: ignore[union-attr]
    assert users_db.users.find_one({"_id": second.id}, account_fields) == before


async def test_calls_abandoned_by_their_callers_leave_the_service_whole(
    stub: users_pb2_grpc.UserServiceStub,
    storefront_stub: users_pb2_grpc.UserServiceStub,
) -> None:
    """Deadlines that expire mid-call (inside MongoDB or hashing) must not break later calls."""
    user = await create(stub)
    abandoned = [
        stub.ListUsers(users_pb2.ListUsersRequest(page_size=1000), timeout=0.005 * (n % 10 + 1))
        for n in range(300)
    ] + [
        storefront_stub.AuthenticateUser(
            users_pb2.AuthenticateUserRequest(email=user.email, password=PASSWORD), timeout=0.01
        )
        for _ in range(10)
    ]
    outcomes = await asyncio.gather(*abandoned, return_exceptions=True)
    errors = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert errors and {e.code() for e in errors} == {grpc.StatusCode.DEADLINE_EXCEEDED}
    for _ in range(20):
        assert (await stub.GetUser(users_pb2.GetUserRequest(id=user.id), timeout=5)).id == user.id
    page = await stub.ListUsers(users_pb2.ListUsersRequest(page_size=1000), timeout=10)
    assert user.id in {u.id for u in page.users}
