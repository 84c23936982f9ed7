"""Composition root: the one place where the order service's concrete adapters are wired
(the shape every service shares: promo_libs.kit)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import grpc

from orders_service.adapters.event_codec import encode_events
from orders_service.adapters.migrations import MIGRATIONS
from orders_service.adapters.mongo_repository import MongoOrderRepository
from orders_service.adapters.promocodes_client import GrpcPromoCodes
from orders_service.config import OrdersSettings
from orders_service.entrypoints.grpc_servicer import OrderServicer
from orders_service.entrypoints.policy import POLICY
from orders_service.service_layer.orders import Orders
from orders_service.service_layer.sweep import Sweeper
from promo.v1 import orders_pb2, orders_pb2_grpc
from promo_libs.grpc.server import GrpcApp
from promo_libs.grpc.users import GrpcUserDirectory
from promo_libs.kit import MongoStore, ServiceKit, new_id, utc_now

SERVICE_NAME = orders_pb2.DESCRIPTOR.services_by_name["OrderService"].full_name


@dataclass
class Assembly:
    """Everything built from the settings, for the server and the operator commands alike."""

    store: MongoStore
    orders: Orders
    sweeper: Sweeper
    users: GrpcUserDirectory
    promo_codes: GrpcPromoCodes


async def assemble(settings: OrdersSettings, kit: ServiceKit) -> Assembly:
    """Connects, migrates and assembles the use cases; nothing happens at import time."""
    store = await kit.mongo(settings, MIGRATIONS, relayed=[MongoOrderRepository.collection_name])
    repository = MongoOrderRepository(
        store.db, encode_events, store.notifier(MongoOrderRepository.collection_name)
    )
    users = GrpcUserDirectory(kit.channel(settings.users_addr), settings.users_timeout_seconds)
    promo_codes = GrpcPromoCodes(
        kit.channel(settings.promocodes_addr),
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
    return Assembly(store, orders, sweeper, users, promo_codes)


async def build(settings: OrdersSettings) -> GrpcApp:
    kit = ServiceKit(settings, serving=True)
    assembly = await assemble(settings, kit)
    servicer = OrderServicer(assembly.orders)

    async def sweep_loop() -> None:
        await assembly.sweeper.loop(settings.sweep_interval_seconds)

    def register(server: grpc.aio.Server) -> None:
        orders_pb2_grpc.add_OrderServiceServicer_to_server(servicer, server)

    return kit.app(
        GrpcApp(
            name="orders",
            service_names=[SERVICE_NAME],
            policies=[POLICY],
            register=register,
            probes={"users": assembly.users.ping, "promocodes": assembly.promo_codes.ping},
            peers={"users", "promocodes"},
            background=[sweep_loop],
        )
    )
