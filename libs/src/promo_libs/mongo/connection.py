"""The MongoDB connection of the original spec: connect, disconnect, is_connected."""

from __future__ import annotations

import asyncio
from typing import Any

from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from promo_libs.config import MongoSettings, redacted_uri
from promo_libs.logging import get_logger
from promo_libs.metrics import MONGO_DATABASE_SIZE
from promo_libs.mongo.monitoring import CommandMetrics, PoolMetrics

log = get_logger(__name__)

Document = dict[str, Any]


class MongoConnection:
    """Owns one AsyncMongoClient for one service database. Nothing connects at import time."""

    def __init__(self, settings: MongoSettings) -> None:
        self._settings = settings
        self._client: AsyncMongoClient[Document] | None = None

    async def connect(self) -> None:
        if self._client is not None:
            return
        self._client = AsyncMongoClient(
            self._settings.mongodb_uri,
            serverSelectionTimeoutMS=self._settings.mongodb_timeout_ms,
            connectTimeoutMS=self._settings.mongodb_timeout_ms,
            maxPoolSize=self._settings.mongodb_max_pool_size,
            tz_aware=True,
            event_listeners=[CommandMetrics(), PoolMetrics()],
            appname=self._settings.mongodb_db_name,
        )
        await self._client.aconnect()

    async def wait_until_reachable(self, deadline_seconds: float = 60.0) -> None:
        """Start-up waits for the database instead of crashing in a restart loop."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + deadline_seconds
        while True:
            if await self.ping():
                return
            if loop.time() > give_up:
                raise RuntimeError(
                    f"MongoDB at {redacted_uri(self._settings.mongodb_uri)} is not reachable"
                )
            # Never the URI itself: it holds the password (DESIGN.md, Contracts).
            log.warning("waiting for MongoDB", uri=redacted_uri(self._settings.mongodb_uri))
            await asyncio.sleep(1.0)

    async def disconnect(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    def is_connected(self) -> bool:
        return self._client is not None

    @property
    def client(self) -> AsyncMongoClient[Document]:
        if self._client is None:
            raise RuntimeError("MongoConnection.connect() has not been called")
        return self._client

    @property
    def db(self) -> AsyncDatabase[Document]:
        return self.client[self._settings.mongodb_db_name]

    async def ping(self) -> bool:
        try:
            await self.client.admin.command("ping")
        except Exception:
            return False
        return True

    async def refresh_size_metric(self) -> None:
        stats = await self.db.command("dbStats")
        size = stats.get("storageSize") or stats.get("dataSize") or 0
        MONGO_DATABASE_SIZE.labels(self._settings.mongodb_db_name).set(float(size))

    async def size_metric_loop(self, interval: float = 30.0) -> None:
        while True:
            try:
                await self.refresh_size_metric()
            except Exception as exc:  # a metric must never take the service down
                log.warning("dbStats failed", error=str(exc))
            await asyncio.sleep(interval)
