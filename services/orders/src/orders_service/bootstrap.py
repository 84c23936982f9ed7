"""Composition root: the one place where the order service's concrete adapters are wired."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import grpc
from bson import ObjectId

from orders_service.adapters.event_codec import encode_events
from orders_service.adapters.migrations import MIGRATIONS
from orders_service.adapters.mongo_repository import MongoOrderRepository
from orders_service.adapters.promocodes_client import GrpcPromoCodes
from orders_service.adapters.users_client import GrpcUserDirectory
from orders_service.config import OrdersSettings
from orders_service.entrypoints.grpc_servicer import OrderServicer
from orders_service.entrypoints.policy import POLICY
from orders_service.service_layer.orders import Orders
from orders_service.service_layer.sweep import Sweeper
from promo.v1 import orders_pb2, orders_pb2_grpc
from promo_libs.bus import EventPublisher, RedisStreamPublisher, redis_client
from promo_libs.grpc.client import secure_channel
from promo_libs.grpc.server import GrpcApp
from promo_libs.mongo.connection import MongoConnection
from promo_libs.mongo.migrations import apply_migrations
from promo_libs.mongo.outbox_store import MongoOutboxStore
from promo_libs.relay import OutboxRelay

SERVICE_NAME = orders_pb2.DESCRIPTOR.services_by_name["OrderService"].full_name


def new_id() -> str:
    return str(ObjectId())


def utc_now() -> datetime:
    """Now, at the millisecond precision MongoDB stores, so answers equal later reads."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


@dataclass
class Assembly:
    """Everything built from the settings, for the server and the sweep command alike."""

    connection: MongoConnection
    orders: Orders
    sweeper: Sweeper
    users: GrpcUserDirectory
    promo_codes: GrpcPromoCodes
    channels: list[grpc.aio.Channel]
    relays: list[OutboxRelay]

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close()
        await self.connection.disconnect()


async def assemble(settings: OrdersSettings, publisher: EventPublisher | None = None) -> Assembly:
    """Connects, migrates and assembles the use cases; nothing happens at import time. With a
    `publisher`, the outbox relay of the orders collection too."""
    connection = MongoConnection(settings)
    await connection.connect()
    await connection.wait_until_reachable()
    await apply_migrations(connection.db, MIGRATIONS)
    relay = (
        None
        if publisher is None
        else OutboxRelay(
            MongoOutboxStore(connection.db[MongoOrderRepository.collection_name]),
            publisher,
            idle_seconds=settings.outbox_relay_idle_seconds,
        )
    )
    repository = MongoOrderRepository(
        connection.db, encode_events, None if relay is None else relay.notify
    )
    users_channel = secure_channel(settings.users_addr, settings.tls_paths())
    promocodes_channel = secure_channel(settings.promocodes_addr, settings.tls_paths())
    users = GrpcUserDirectory(users_channel, settings.users_timeout_seconds)
    promo_codes = GrpcPromoCodes(
        promocodes_channel,
        settings.promocodes_timeout_seconds,
        max_in_flight=settings.promocodes_max_in_flight,
    )
    orders = Orders(
        repository,
        users,
        promo_codes,
        new_id,
        utc_now,
        timedelta(seconds=settings.sweep_stale_seconds),
    )
    sweeper = Sweeper(repository, orders, utc_now, settings.sweep_batch_size)
    return Assembly(
        connection,
        orders,
        sweeper,
        users,
        promo_codes,
        [users_channel, promocodes_channel],
        [] if relay is None else [relay],
    )


async def build(settings: OrdersSettings) -> GrpcApp:
    redis = redis_client(settings)
    assembly = await assemble(settings, RedisStreamPublisher(redis))
    servicer = OrderServicer(assembly.orders)

    async def sweep_loop() -> None:
        await assembly.sweeper.loop(settings.sweep_interval_seconds)

    async def on_stop() -> None:
        await assembly.close()
        await redis.aclose()

    def register(server: grpc.aio.Server) -> None:
        orders_pb2_grpc.add_OrderServiceServicer_to_server(servicer, server)

    return GrpcApp(
        name="orders",
        service_names=[SERVICE_NAME],
        policies=[POLICY],
        register=register,
        probes={
            "mongo": assembly.connection.ping,
            "users": assembly.users.ping,
            "promocodes": assembly.promo_codes.ping,
        },
        peers={"users", "promocodes"},
        background=[
            sweep_loop,
            assembly.connection.size_metric_loop,
            *(relay.run for relay in assembly.relays),
        ],
        on_stop=on_stop,
    )
