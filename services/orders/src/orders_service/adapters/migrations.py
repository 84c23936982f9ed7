"""The orders database's migrations, in version order. Indexes first."""

from __future__ import annotations

from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.database import AsyncDatabase

from promo_libs.mongo.connection import Document
from promo_libs.mongo.indexes import drop_index_by_keys
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
    # Found by its key specification and dropped by the name the server reports for it: on
    # MongoDB that is the name migration 1 gave it (`idempotency_key_unique`), which a drop by key
    # list (PyMongo sends the generated `idempotency_key_1`) does not find -- IndexNotFound, and
    # the service could not start. A database where a failed start left both indexes, or where
    # the old one is already gone, is finished by the same code.
    await drop_index_by_keys(orders, [("idempotency_key", ASCENDING)])


MIGRATIONS = [
    Migration(1, "orders indexes", _indexes),
    Migration(2, "idempotency keys per user", _keys_per_user),
]
