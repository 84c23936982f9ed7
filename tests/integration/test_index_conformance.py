"""Every index every service's migrations create or drop, checked against MongoDB's rules.

The local stand-in ignores index names and accepts a drop of any name, so a migration that real
MongoDB refuses (IndexNotFound, IndexOptionsConflict) passes there. Here the index commands the
code really sends are recorded (PyMongo's command monitoring) and replayed through a model of
MongoDB's documented index catalogue (createIndexes, dropIndexes), and the effect is asserted on
the server by key specification through listIndexes: what the migrations asked for exists, with
its uniqueness, and nothing else does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
import pytest_asyncio
from pymongo import ASCENDING, AsyncMongoClient, monitoring
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from orders_service.adapters.migrations import MIGRATIONS as ORDERS
from promo_libs.mongo.indexes import key_spec
from promo_libs.mongo.migrations import Migration, apply_migrations
from promocodes_service.adapters.migrations import MIGRATIONS as PROMOCODES
from users_service.adapters.migrations import MIGRATIONS as USERS

Db = AsyncDatabase[dict[str, Any]]
Keys = tuple[tuple[str, int | str], ...]
# The bookkeeping collections of promo_libs.mongo.migrations carry only their _id index.
BOOKKEEPING = {"_migrations", "_migrations_lock"}


def _keys(spec: Any) -> Keys:
    return tuple(key_spec(dict(spec).items()))


@dataclass
class IndexCommands(monitoring.CommandListener):
    """The createIndexes / dropIndexes commands sent, and the names listIndexes answered."""

    database: str
    log: list[tuple[str, str, Any]] = field(default_factory=list)
    _listing: dict[int, str] = field(default_factory=dict)

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.database_name != self.database:
            return
        command = event.command
        if event.command_name == "createIndexes":
            self.log.append(("create", command["createIndexes"], list(command["indexes"])))
        elif event.command_name == "dropIndexes":
            self.log.append(("drop", command["dropIndexes"], command["index"]))
        elif event.command_name == "listIndexes":
            self._listing[event.request_id] = command["listIndexes"]

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        collection = self._listing.pop(event.request_id, None)
        if collection is not None:
            batch = event.reply["cursor"]["firstBatch"]
            self.log.append(("listed", collection, {i["name"]: _keys(i["key"]) for i in batch}))

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        self._listing.pop(event.request_id, None)


def _create(indexes: dict[str, tuple[Keys, bool]], collection: str, specs: Any) -> list[str]:
    refused: list[str] = []
    for spec in specs:
        keys, name, unique = _keys(spec["key"]), spec["name"], bool(spec.get("unique"))
        if name in indexes:
            if indexes[name] != (keys, unique):
                refused.append(f"{collection}: {name} exists with other keys/options")
            continue
        clash = [n for n, (k, _) in indexes.items() if k == keys]
        if clash:
            refused.append(f"{collection}: keys of {name} exist as {clash[0]}")
            continue
        indexes[name] = (keys, unique)
    return refused


def _drop(
    indexes: dict[str, tuple[Keys, bool]], listed: dict[str, Keys], collection: str, index: Any
) -> list[str]:
    if index == "_id_":
        return [f"{collection}: the _id index cannot be dropped"]
    if isinstance(index, str) and index in indexes:
        del indexes[index]
    elif isinstance(index, str) and index in listed:
        for name in [n for n, (k, _) in indexes.items() if k == listed[index]]:
            del indexes[name]
    else:
        return [f"{collection}: IndexNotFound for a drop of {index!r}"]
    return []


def mongodb_catalogue(log: Sequence[tuple[str, str, Any]]) -> tuple[dict[str, Any], list[str]]:
    """Replays the commands through MongoDB's rules; returns {collection: {name: (keys, unique)}}
    and what MongoDB would have refused.

    Rules (MongoDB manual, createIndexes and dropIndexes): creating an index whose name exists is a
    no-op only with the same keys and options (else IndexKeySpecsConflict/IndexOptionsConflict);
    creating one whose keys exist under another name is IndexOptionsConflict; dropping by a name no
    index has is IndexNotFound; `_id_` cannot be dropped. A name the server itself listed counts as
    existing (the stand-in lists names of its own, for the same key specifications).
    """
    catalogue: dict[str, dict[str, tuple[Keys, bool]]] = {}
    listed: dict[str, dict[str, Keys]] = {}
    refused: list[str] = []
    for kind, collection, payload in log:
        indexes = catalogue.setdefault(collection, {"_id_": ((("_id", 1),), False)})
        if kind == "listed":
            listed[collection] = payload
        elif kind == "create":
            refused += _create(indexes, collection, payload)
        elif kind == "drop":
            refused += _drop(indexes, listed.get(collection, {}), collection, payload)
    return catalogue, refused


def _fields(catalogue: dict[str, set[tuple[Keys, bool]]]) -> dict[str, set[tuple[Any, bool]]]:
    """Without directions: the stand-in lists every key as ascending (docs/mongodb-stand-in.md)."""
    return {
        collection: {(tuple(f for f, _ in keys), unique) for keys, unique in indexes}
        for collection, indexes in catalogue.items()
    }


def same_indexes(
    stack: Any, server: dict[str, set[tuple[Keys, bool]]], model: dict[str, set[tuple[Keys, bool]]]
) -> bool:
    """Equal by key specification and uniqueness; directions too on a real MongoDB."""
    if stack.is_managed("mongo"):
        return _fields(server) == _fields(model)
    return server == model


async def server_catalogue(db: Db) -> dict[str, set[tuple[Keys, bool]]]:
    found: dict[str, set[tuple[Keys, bool]]] = {}
    for collection in await db.list_collection_names():
        if collection in BOOKKEEPING:
            continue
        found[collection] = {
            (_keys(i["key"]), bool(i.get("unique")))
            async for i in await db[collection].list_indexes()
        }
    return found


def by_keys(catalogue: dict[str, Any]) -> dict[str, set[tuple[Keys, bool]]]:
    return {
        collection: set(indexes.values())
        for collection, indexes in catalogue.items()
        if collection not in BOOKKEEPING
    }


@pytest_asyncio.fixture(loop_scope="session")
async def recorded(stack: Any, mongo_db_name: str) -> AsyncIterator[tuple[Db, IndexCommands]]:
    """A database and the index commands sent to it, through a client of its own."""
    commands = IndexCommands(mongo_db_name)
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        stack.mongo_uri, tz_aware=True, event_listeners=[commands]
    )
    try:
        yield client[mongo_db_name], commands
    finally:
        await client.close()


@pytest.mark.parametrize(
    "migrations", [USERS, PROMOCODES, ORDERS], ids=["users", "promocodes", "orders"]
)
async def test_every_migration_from_empty_is_what_mongodb_accepts(
    stack: Any, recorded: tuple[Db, IndexCommands], migrations: list[Migration]
) -> None:
    db, commands = recorded
    assert await apply_migrations(db, migrations) == [m.version for m in migrations]
    catalogue, refused = mongodb_catalogue(commands.log)
    assert refused == []
    assert same_indexes(stack, await server_catalogue(db), by_keys(catalogue))
    sent = len(commands.log)
    assert await apply_migrations(db, migrations) == []
    assert [c for c in commands.log[sent:] if c[0] != "listed"] == []


OLD = (("idempotency_key", 1),)
NEW = (("user_id", 1), ("idempotency_key", 1))


async def _orders_v1(db: Db) -> None:
    assert await apply_migrations(db, ORDERS[:1]) == [1]
    await db.orders.insert_one({"_id": "a", "user_id": "u1", "idempotency_key": "k"})
    with pytest.raises(DuplicateKeyError):  # version 1: one key for everybody
        await db.orders.insert_one({"_id": "b", "user_id": "u2", "idempotency_key": "k"})


async def _assert_keys_per_user(stack: Any, db: Db, commands: IndexCommands) -> None:
    catalogue, refused = mongodb_catalogue(commands.log)
    assert refused == []
    server = await server_catalogue(db)
    assert same_indexes(stack, server, by_keys(catalogue))
    orders = server["orders"]
    assert (NEW, True) in orders
    assert all(keys != OLD for keys, _ in orders)
    await db.orders.insert_one({"_id": "b", "user_id": "u2", "idempotency_key": "k"})
    with pytest.raises(DuplicateKeyError):
        await db.orders.insert_one({"_id": "c", "user_id": "u1", "idempotency_key": "k"})


async def test_migrating_a_v1_orders_database_drops_the_global_key_by_its_name(
    stack: Any, recorded: tuple[Db, IndexCommands]
) -> None:
    db, commands = recorded
    await _orders_v1(db)
    assert await apply_migrations(db, ORDERS) == [2]
    await _assert_keys_per_user(stack, db, commands)


async def test_a_start_that_failed_midway_through_migration_2_is_finished(
    stack: Any, recorded: tuple[Db, IndexCommands]
) -> None:
    # What the old migration left on MongoDB: the new index built, the old one still there
    # (its drop refused), version 2 not recorded.
    db, commands = recorded
    await _orders_v1(db)
    await db.orders.create_index(
        [("user_id", ASCENDING), ("idempotency_key", ASCENDING)],
        unique=True,
        name="user_idempotency_key_unique",
    )
    assert await apply_migrations(db, ORDERS) == [2]
    await _assert_keys_per_user(stack, db, commands)


async def test_migration_2_where_the_old_index_is_already_gone_sends_no_drop(
    stack: Any, recorded: tuple[Db, IndexCommands]
) -> None:
    db, commands = recorded
    await _orders_v1(db)
    names = [i["name"] async for i in await db.orders.list_indexes() if _keys(i["key"]) == OLD]
    await db.orders.drop_index(names[0])  # an operator dropped it by hand
    sent = len(commands.log)
    assert await apply_migrations(db, ORDERS) == [2]
    assert [c for c in commands.log[sent:] if c[0] == "drop"] == []
    await _assert_keys_per_user(stack, db, commands)
