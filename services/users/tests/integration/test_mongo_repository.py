"""MongoUserRepository and the base repository on the MongoDB stand-in."""

from datetime import UTC, datetime
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from promo.v1 import events_pb2
from promo_libs.mongo.migrations import apply_migrations
from promo_libs.outbox import decode_envelope
from users_service.adapters.event_codec import encode_events
from users_service.adapters.migrations import MIGRATIONS
from users_service.adapters.mongo_repository import MongoUserRepository
from users_service.domain.model import User
from users_service.domain.ports import EmailTaken, VersionConflict

NOW = datetime(2026, 3, 4, 5, 6, 7, 123000, tzinfo=UTC)


@pytest.fixture
async def repo(
    mongo_client: AsyncMongoClient[dict[str, Any]], mongo_db_name: str
) -> MongoUserRepository:
    db = mongo_client[mongo_db_name]
    await apply_migrations(db, MIGRATIONS)
    return MongoUserRepository(db, encode_events)


def new_user(user_id: str, email: str) -> User:
    return User.register(user_id, email, "Name", "$argon2id$fake", NOW)


async def test_round_trip_keeps_every_field(repo: MongoUserRepository) -> None:
    user = new_user("a1", "Ann@example.com")
    await repo.add(user)
    assert user.events == []  # handed over to the outbox
    stored = await repo.get("a1")
    assert stored == user and stored is not None and stored.created_at == NOW
    assert await repo.get_by_email("ann@example.com") == user
    assert await repo.exists("a1") and not await repo.exists("zz")


async def test_duplicate_email_is_email_taken(repo: MongoUserRepository) -> None:
    await repo.add(new_user("b1", "bob@example.com"))
    with pytest.raises(EmailTaken):
        await repo.add(new_user("b2", "BOB@example.com"))
    assert await repo.find_all() == [await repo.get("b1")]


async def test_save_is_compare_and_set_on_version(repo: MongoUserRepository) -> None:
    await repo.add(new_user("c1", "cat@example.com"))
    first = await repo.get("c1")
    second = await repo.get("c1")
    assert first is not None and second is not None
    first.update(NOW, display_name="First")
    await repo.save(first)
    second.update(NOW, display_name="Second")
    with pytest.raises(VersionConflict):
        await repo.save(second)
    stored = await repo.get("c1")
    assert stored is not None and (stored.display_name, stored.version) == ("First", 2)


async def test_save_refuses_an_email_another_user_has(repo: MongoUserRepository) -> None:
    await repo.add(new_user("d1", "dan@example.com"))
    await repo.add(new_user("d2", "dee@example.com"))
    other = await repo.get("d2")
    assert other is not None
    other.update(NOW, email="DAN@example.com")
    with pytest.raises(EmailTaken):
        await repo.save(other)


async def test_events_accumulate_in_the_outbox_of_the_document(
    repo: MongoUserRepository,
) -> None:
    user = new_user("e1", "eve@example.com")
    await repo.add(user)
    user.delete(NOW)
    await repo.save(user)
    document = await repo.collection.find_one({"_id": "e1"})
    assert document is not None and bool(document["outbox_pending"])
    kinds = sorted(
        events_pb2.EventEnvelope.FromString(decode_envelope(e)).WhichOneof("payload")
        for e in document["outbox"].values()
    )
    assert kinds == ["user_created", "user_deactivated"]


async def test_base_repository_operations(repo: MongoUserRepository) -> None:
    for n in range(3):
        await repo.create(new_user(f"f{n}", f"f{n}@example.com"))
    assert [u.id for u in await repo.find_all({"active": True})] == ["f0", "f1", "f2"]
    updated = await repo.update("f1", {"display_name": "Renamed"})
    assert updated.display_name == "Renamed"
    with pytest.raises(KeyError):
        await repo.update("missing", {"display_name": "x"})
    await repo.delete("f2")
    assert not await repo.exists("f2")
    page, last = await repo.list_page(True, None, 1)
    assert [u.id for u in page] == ["f0"] and last == "f0"
    page, last = await repo.list_page(True, "f0", 5)
    assert [u.id for u in page] == ["f1"] and last is None
