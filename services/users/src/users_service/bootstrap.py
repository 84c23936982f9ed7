"""Composition root: the one place where the user service's concrete adapters are wired
(the shape every service shares: promo_libs.kit)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from promo.v1 import users_pb2, users_pb2_grpc
from promo_libs.grpc.server import GrpcApp
from promo_libs.kit import MongoStore, ServiceKit, new_id, utc_now
from promo_libs.rate_limit import RedisLimiter
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


@dataclass
class Assembly:
    """Everything built from the settings, for the server and the operator commands alike."""

    store: MongoStore
    accounts: Accounts


async def assemble(settings: UsersSettings, kit: ServiceKit) -> Assembly:
    """Connects, migrates and assembles the use cases; nothing happens at import time."""
    store = await kit.mongo(settings, MIGRATIONS, relayed=[MongoUserRepository.collection_name])
    hasher = Argon2Hasher(
        settings.argon2_time_cost,
        settings.argon2_memory_kib,
        settings.argon2_parallelism,
        settings.argon2_max_concurrent,
    )
    kit.on_close(hasher.close)
    repository = MongoUserRepository(
        store.db, encode_events, store.notifier(MongoUserRepository.collection_name)
    )
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
    return Assembly(store, Accounts(repository, hasher, new_id, utc_now, tokens=tokens))


async def build(settings: UsersSettings) -> GrpcApp:
    kit = ServiceKit(settings, serving=True)
    servicer = UserServicer((await assemble(settings, kit)).accounts)
    return kit.app(
        GrpcApp(
            name="users",
            service_names=[SERVICE_NAME],
            policies=[POLICY],
            limits=LIMITS,
            limiter=RedisLimiter(kit.redis(settings)),
            register=lambda server: users_pb2_grpc.add_UserServiceServicer_to_server(
                servicer, server
            ),
        )
    )
