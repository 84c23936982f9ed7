"""The users database's migrations, in version order. Indexes first."""

from __future__ import annotations

from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase

from promo_libs.mongo.connection import Document
from promo_libs.mongo.migrations import Migration


async def _indexes(db: AsyncDatabase[Document]) -> None:
    users = db["users"]
    await users.create_index([("email_key", ASCENDING)], unique=True, name="email_key_unique")
    # Not (active, _id): the local MongoDB stand-in rejects writes once an index names `_id`.
    await users.create_index([("active", ASCENDING)], name="active")
    await users.create_index([("outbox_pending", ASCENDING)], name="outbox_pending")


MIGRATIONS = [Migration(1, "users indexes", _indexes)]
