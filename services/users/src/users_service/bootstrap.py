"""Composition root: the one place where the user service's concrete adapters are wired."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bson import ObjectId

from promo.v1 import users_pb2, users_pb2_grpc
from promo_libs.bus import RedisStreamPublisher, redis_client
from promo_libs.grpc.server import GrpcApp
from promo_libs.mongo.connection import MongoConnection
from promo_libs.mongo.migrations import apply_migrations
from promo_libs.mongo.outbox_store import MongoOutboxStore
from promo_libs.rate_limit import RedisLimiter
from promo_libs.relay import OutboxRelay
from promo_libs.user_tokens import UserTokenIssuer
from users_service.adapters.argon2_hasher import Argon2Hasher
from users_service.adapters.event_codec import encode_events
from users_service.adapters.migrations import MIGRATIONS
from users_service.adapters.mongo_repository import MongoUserRepository
from users_service.config import UsersSettings
from users_service.entrypoints.grpc_servicer import UserServicer
from users_service.entrypoints.limits import LIMITS
from users_service.entrypoints.policy import POLICY
from users_service.service_layer.accounts import Accounts

SERVICE_NAME = users_pb2.DESCRIPTOR.services_by_name["UserService"].full_name


def new_id() -> str:
    return str(ObjectId())


def utc_now() -> datetime:
    """Now, at the millisecond precision MongoDB stores, so answers equal later reads."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


async def build(settings: UsersSettings) -> GrpcApp:
    """Connects, migrates and assembles the service; nothing happens at import time."""
    connection = MongoConnection(settings)
    await connection.connect()
    await connection.wait_until_reachable()
    await apply_migrations(connection.db, MIGRATIONS)
    hasher = Argon2Hasher(
        settings.argon2_time_cost,
        settings.argon2_memory_kib,
        settings.argon2_parallelism,
        settings.argon2_max_concurrent,
    )
    redis = redis_client(settings)
    relay = OutboxRelay(
        MongoOutboxStore(connection.db[MongoUserRepository.collection_name]),
        RedisStreamPublisher(redis),
        idle_seconds=settings.outbox_relay_idle_seconds,
    )
    repository = MongoUserRepository(connection.db, encode_events, on_events_written=relay.notify)
    tokens = (
        None
        if settings.user_token_signing_key_file is None
        else UserTokenIssuer(
            settings.user_token_signing_key_file,
            settings.user_token_issuer,
            settings.user_token_audience,
            timedelta(seconds=settings.user_token_ttl_seconds),
        )
    )
    accounts = Accounts(repository, hasher, new_id, utc_now, tokens=tokens)
    servicer = UserServicer(accounts)

    async def on_stop() -> None:
        hasher.close()
        await redis.aclose()
        await connection.disconnect()

    return GrpcApp(
        name="users",
        service_names=[SERVICE_NAME],
        policies=[POLICY],
        limits=LIMITS,
        limiter=RedisLimiter(redis),
        register=lambda server: users_pb2_grpc.add_UserServiceServicer_to_server(servicer, server),
        probes={"mongo": connection.ping},
        background=[connection.size_metric_loop, relay.run],
        on_stop=on_stop,
    )
