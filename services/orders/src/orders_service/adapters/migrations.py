"""The orders database's migrations, in version order. Indexes first."""

from __future__ import annotations

from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.database import AsyncDatabase

from promo_libs.mongo.connection import Document
from promo_libs.mongo.migrations import Migration


async def _indexes(db: AsyncDatabase[Document]) -> None:
    orders = db["orders"]
    # The guard of CreateOrder's idempotency: one order per key, whatever the concurrency.
    await orders.create_index(
        [("idempotency_key", ASCENDING)], unique=True, name="idempotency_key_unique"
    )
    # Listing newest first, by user / by status / overall. Not (..., _id): the local MongoDB
    # stand-in rejects writes once an index names `_id`; the id tie-break is cheap.
    await orders.create_index(
        [("user_id", ASCENDING), ("created_at", DESCENDING)], name="user_created"
    )
    await orders.create_index(
        [("status", ASCENDING), ("created_at", DESCENDING)], name="status_created"
    )
    await orders.create_index([("created_at", DESCENDING)], name="created")
    # The sweep: orders a crash may have left half done.
    await orders.create_index([("sweep_due_at", ASCENDING)], name="sweep_due")
    await orders.create_index([("outbox_pending", ASCENDING)], name="outbox_pending")


async def _keys_per_user(db: AsyncDatabase[Document]) -> None:
    # A key is the client's name for one intended order of one user: two users choosing the
    # same key (or a careless client using a constant) must not collide, nor learn of each
    # other's orders. The new index is built before the old one goes, so a key is never
    # unguarded; a document pair the old index refused is valid under the new one.
    orders = db["orders"]
    await orders.create_index(
        [("user_id", ASCENDING), ("idempotency_key", ASCENDING)],
        unique=True,
        name="user_idempotency_key_unique",
    )
    # Found and dropped by its keys: the local stand-in names indexes itself and ignores a drop
    # by the name we gave (real MongoDB accepts the key spec too).
    global_key = [("idempotency_key", ASCENDING)]
    for index in (await orders.index_information()).values():
        if list(index["key"]) == global_key:
            await orders.drop_index(global_key)


MIGRATIONS = [
    Migration(1, "orders indexes", _indexes),
    Migration(2, "idempotency keys per user", _keys_per_user),
]
