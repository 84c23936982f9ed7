"""Versioned MongoDB migrations, applied at start-up and recorded in `_migrations`.

Each migration is idempotent on its own (creating an index that exists is a no-op), and a lease
in `_migrations_lock` makes two processes starting at once apply them one after the other: the
second waits, then finds every version recorded and does nothing.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from promo_libs.logging import get_logger
from promo_libs.mongo.connection import Document
from promo_libs.mongo.times import to_millis

log = get_logger(__name__)

MIGRATIONS = "_migrations"
LOCK = "_migrations_lock"


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    apply: Callable[[AsyncDatabase[Document]], Awaitable[None]]


async def _acquire(db: AsyncDatabase[Document], holder: str, lease: timedelta) -> bool:
    now = to_millis(datetime.now(UTC))
    expires_at = now + int(lease.total_seconds() * 1000)
    try:
        await db[LOCK].insert_one({"_id": "lock", "holder": holder, "expires_at": expires_at})
    except DuplicateKeyError:
        # Held: take it over only if its holder died and let the lease run out.
        taken = await db[LOCK].find_one_and_update(
            {"_id": "lock", "expires_at": {"$lt": now}},
            {"$set": {"holder": holder, "expires_at": expires_at}},
        )
        return taken is not None
    return True


async def _release(db: AsyncDatabase[Document], holder: str) -> None:
    await db[LOCK].delete_one({"_id": "lock", "holder": holder})


async def apply_migrations(
    db: AsyncDatabase[Document],
    migrations: Sequence[Migration],
    lease: timedelta = timedelta(seconds=120),
    wait_seconds: float = 180.0,
) -> list[int]:
    """Applies the migrations not yet recorded, in version order; returns the versions applied."""
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions) or versions != sorted(versions):
        raise ValueError("migration versions must be unique and ascending")
    holder = f"{socket.gethostname()}:{os.getpid()}:{id(db)}"
    loop = asyncio.get_running_loop()
    give_up = loop.time() + wait_seconds
    while not await _acquire(db, holder, lease):
        if loop.time() > give_up:
            raise TimeoutError("another process holds the migrations lock for too long")
        await asyncio.sleep(0.2)
    applied: list[int] = []
    try:
        done = {d["_id"] async for d in db[MIGRATIONS].find({}, {"_id": 1})}
        for migration in migrations:
            if migration.version in done:
                continue
            log.info("applying migration", version=migration.version, name=migration.name)
            await migration.apply(db)
            await db[MIGRATIONS].insert_one(
                {
                    "_id": migration.version,
                    "name": migration.name,
                    "applied_at": to_millis(datetime.now(UTC)),
                }
            )
            applied.append(migration.version)
    finally:
        await _release(db, holder)
    return applied
