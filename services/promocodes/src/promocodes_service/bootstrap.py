"""Composition root: the one place where the promo-code service's concrete adapters are wired."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from bson import ObjectId

from promo.v1 import promo_codes_pb2, promo_codes_pb2_grpc
from promo_libs.bus import EventPublisher, RedisStreamPublisher, redis_client
from promo_libs.grpc.client import secure_channel
from promo_libs.grpc.server import GrpcApp
from promo_libs.mongo.connection import MongoConnection
from promo_libs.mongo.migrations import apply_migrations
from promo_libs.mongo.outbox_store import MongoOutboxStore
from promo_libs.rate_limit import RedisLimiter
from promo_libs.relay import OutboxRelay
from promocodes_service.adapters.event_codec import encode_code_events, encode_usage_events
from promocodes_service.adapters.migrations import MIGRATIONS
from promocodes_service.adapters.mongo_codes import MongoPromoCodeRepository
from promocodes_service.adapters.mongo_usages import MongoUsageRepository
from promocodes_service.adapters.users_client import GrpcUserDirectory
from promocodes_service.config import PromocodesSettings
from promocodes_service.entrypoints.grpc_servicer import PromoCodeServicer
from promocodes_service.entrypoints.limits import LIMITS
from promocodes_service.entrypoints.policy import POLICY
from promocodes_service.service_layer.catalogue import Catalogue
from promocodes_service.service_layer.recovery import Recovery
from promocodes_service.service_layer.redemption import Redemptions

SERVICE_NAME = promo_codes_pb2.DESCRIPTOR.services_by_name["PromoCodeService"].full_name


def new_id() -> str:
    return str(ObjectId())


def utc_now() -> datetime:
    """Now, at the millisecond precision MongoDB stores, so answers equal later reads."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


@dataclass
class Storage:
    connection: MongoConnection
    codes: MongoPromoCodeRepository
    usages: MongoUsageRepository
    relays: list[OutboxRelay]


async def connect_storage(
    settings: PromocodesSettings, publisher: EventPublisher | None = None
) -> Storage:
    """The repositories; with a `publisher`, each collection's outbox relay too."""
    connection = MongoConnection(settings)
    await connection.connect()
    await connection.wait_until_reachable()
    await apply_migrations(connection.db, MIGRATIONS)
    relays: dict[str, OutboxRelay] = {}
    if publisher is not None:
        for collection in (
            MongoPromoCodeRepository.collection_name,
            MongoUsageRepository.collection_name,
        ):
            relays[collection] = OutboxRelay(
                MongoOutboxStore(connection.db[collection]),
                publisher,
                idle_seconds=settings.outbox_relay_idle_seconds,
            )

    def notifier(collection: str) -> Callable[[], None] | None:
        relay = relays.get(collection)
        return None if relay is None else relay.notify

    return Storage(
        connection,
        MongoPromoCodeRepository(
            connection.db, encode_code_events, notifier(MongoPromoCodeRepository.collection_name)
        ),
        MongoUsageRepository(
            connection.db, encode_usage_events, notifier(MongoUsageRepository.collection_name)
        ),
        list(relays.values()),
    )


def build_recovery(settings: PromocodesSettings, storage: Storage) -> Recovery:
    return Recovery(
        storage.codes,
        storage.usages,
        utc_now,
        timedelta(seconds=settings.recovery_stale_seconds),
    )


async def build(settings: PromocodesSettings) -> GrpcApp:
    """Connects, migrates and assembles the service; nothing happens at import time."""
    redis = redis_client(settings)
    storage = await connect_storage(settings, RedisStreamPublisher(redis))
    users_channel = secure_channel(settings.users_addr, settings.tls_paths())
    users = GrpcUserDirectory(users_channel, settings.users_timeout_seconds)
    recovery = build_recovery(settings, storage)
    catalogue = Catalogue(storage.codes, new_id, utc_now)
    redemptions = Redemptions(storage.codes, storage.usages, users, recovery, new_id, utc_now)
    servicer = PromoCodeServicer(catalogue, redemptions)

    async def recovery_loop() -> None:
        await recovery.loop(settings.recovery_interval_seconds)

    async def on_stop() -> None:
        await users_channel.close()
        await redis.aclose()
        await storage.connection.disconnect()

    return GrpcApp(
        name="promocodes",
        service_names=[SERVICE_NAME],
        policies=[POLICY],
        limits=LIMITS,
        limiter=RedisLimiter(redis),
        register=lambda server: promo_codes_pb2_grpc.add_PromoCodeServiceServicer_to_server(
            servicer, server
        ),
        probes={"mongo": storage.connection.ping, "users": users.ping},
        peers={"users"},
        background=[
            recovery_loop,
            storage.connection.size_metric_loop,
            *(relay.run for relay in storage.relays),
        ],
        on_stop=on_stop,
    )
