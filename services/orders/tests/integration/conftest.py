"""A migrated orders database on the local stack's MongoDB, per test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from orders_service.adapters.migrations import MIGRATIONS
from promo_libs.mongo.migrations import apply_migrations


@pytest_asyncio.fixture(loop_scope="session")
async def db(
    mongo_client: AsyncMongoClient[dict[str, Any]], mongo_db_name: str
) -> AsyncIterator[AsyncDatabase[dict[str, Any]]]:
    database = mongo_client[mongo_db_name]
    await apply_migrations(database, MIGRATIONS)
    yield database
