"""ServiceKit: the resources one process opens, and how they are closed.

A composition root asks the kit for what it needs: MongoDB (connected, reachable, migrated),
Redis, gRPC channels to other services, things to close at the end. A serving kit also builds
the outbox relay of each collection that writes events (and hands its `notify` to the
repositories), runs the relays and the collection-size metric in the background, and probes the
database. `close()` releases everything in one order: the root's own closers (last registered
first), then the channels, Redis and MongoDB, so nothing is closed while something opened
after it may still use it.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import grpc
from pymongo.asynchronous.database import AsyncDatabase

from promo_libs.bus import RedisClient, RedisStreamPublisher, redis_client
from promo_libs.config import MongoServiceSettings, RedisSettings, ServiceSettings
from promo_libs.entrypoint import Command, migrate_command
from promo_libs.grpc.client import secure_channel
from promo_libs.grpc.errors import Driver
from promo_libs.grpc.health import Probe
from promo_libs.grpc.server import GrpcApp
from promo_libs.mongo.connection import MongoConnection
from promo_libs.mongo.errors import MONGO
from promo_libs.mongo.migrations import Migration, apply_migrations
from promo_libs.mongo.outbox_store import MongoOutboxStore
from promo_libs.relay import OutboxRelay

Document = dict[str, Any]
Loop = Callable[[], Coroutine[Any, Any, None]]
Closer = Callable[[], Awaitable[None] | None]


@dataclass
class MongoStore:
    """The service's database, and the outbox relay of each collection that writes events
    (only on a serving kit: operator commands write no events of their own to publish)."""

    connection: MongoConnection
    # The migrations this connection applied (none when the database was up to date).
    applied: list[int] = field(default_factory=list)
    relays: dict[str, OutboxRelay] = field(default_factory=dict)

    @property
    def db(self) -> AsyncDatabase[Document]:
        return self.connection.db

    def notifier(self, collection: str) -> Callable[[], None] | None:
        """What a repository of `collection` calls after writing events: wakes its relay."""
        relay = self.relays.get(collection)
        return None if relay is None else relay.notify


class ServiceKit:
    """One process's resources; `serving=True` for the server, plain for operator commands."""

    def __init__(self, settings: ServiceSettings, *, serving: bool = False) -> None:
        self._settings = settings
        self.serving = serving
        self._closers: list[Closer] = []
        self._channels: list[grpc.aio.Channel] = []
        self._redis: RedisClient | None = None
        self._mongo: MongoConnection | None = None
        self._probes: dict[str, Probe] = {}
        self._drivers: list[Driver] = []
        self._background: list[Loop] = []

    async def mongo(
        self,
        settings: MongoServiceSettings,
        migrations: Sequence[Migration],
        relayed: Sequence[str] = (),
    ) -> MongoStore:
        """Connects, waits until MongoDB answers and applies the migrations. On a serving kit,
        each collection of `relayed` (those whose repositories write events) gets its outbox
        relay, publishing to the Redis streams; the only place a relay is built."""
        if self._mongo is not None:
            raise RuntimeError("a service owns one MongoDB database: ServiceKit.mongo() again")
        connection = MongoConnection(settings)
        self._mongo = connection  # closed by close() even if connecting fails half-way
        await connection.connect()
        await connection.wait_until_reachable()
        store = MongoStore(connection, await apply_migrations(connection.db, migrations))
        self._probes["mongo"] = connection.ping
        self._drivers.append(MONGO)
        if not self.serving:
            return store
        self._background.append(connection.size_metric_loop)
        if relayed:
            publisher = RedisStreamPublisher(
                self.redis(settings), appendfsync_always=settings.redis_appendfsync_always
            )
            for collection in relayed:
                relay = OutboxRelay(
                    MongoOutboxStore(connection.db[collection]),
                    publisher,
                    idle_seconds=settings.outbox_relay_idle_seconds,
                )
                store.relays[collection] = relay
                self._background.append(relay.run)
        return store

    def redis(self, settings: RedisSettings, timeout_seconds: float = 2.0) -> RedisClient:
        """The process's one Redis client, created by the first call (with its timeout);
        nothing connects yet."""
        if self._redis is None:
            self._redis = redis_client(settings, timeout_seconds=timeout_seconds)
        return self._redis

    def channel(self, address: str) -> grpc.aio.Channel:
        """A mutual-TLS channel to another service of the platform, closed with the kit."""
        channel = secure_channel(address, self._settings.tls_paths())
        self._channels.append(channel)
        return channel

    def on_close(self, closer: Closer) -> None:
        """Something the root opened itself (a thread pool, a ClickHouse client)."""
        self._closers.append(closer)

    def app(self, app: GrpcApp) -> GrpcApp:
        """The service's server, with what the kit runs beside it: the kit's probes first
        (the root's own override them), its drivers and loops, and its shutdown."""
        if app.on_stop is not None:
            raise ValueError("the kit closes what it opened: register closers with on_close()")
        return dataclasses.replace(
            app,
            probes={**self._probes, **app.probes},
            drivers=[*self._drivers, *app.drivers],
            background=[*app.background, *self._background],
            on_stop=self.close,
        )

    async def close(self) -> None:
        for closer in reversed(self._closers):
            result = closer()
            if inspect.isawaitable(result):
                await result
        self._closers.clear()
        for channel in self._channels:
            await channel.close()
        self._channels.clear()
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None
        if self._mongo is not None:
            await self._mongo.disconnect()
            self._mongo = None

    async def __aenter__(self) -> ServiceKit:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()


def mongo_migrate_command(migrations: Sequence[Migration]) -> Command[MongoServiceSettings]:
    """`migrate` of a MongoDB service: connects like the server does, applies what is missing
    and exits (a deployment's migrations Job, so new indexes exist before new code serves)."""

    async def apply(settings: MongoServiceSettings) -> list[int]:
        async with ServiceKit(settings) as kit:
            return (await kit.mongo(settings, migrations)).applied

    return migrate_command(apply)
