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


MIGRATIONS = [Migration(1, "orders indexes", _indexes)]
