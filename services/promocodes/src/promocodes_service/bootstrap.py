"""Composition root: the one place where the promo-code service's concrete adapters are wired
(the shape every service shares: promo_libs.kit)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from promo.v1 import promo_codes_pb2, promo_codes_pb2_grpc
from promo_libs.grpc.server import GrpcApp
from promo_libs.grpc.users import GrpcUserDirectory
from promo_libs.kit import MongoStore, ServiceKit, new_id, utc_now
from promo_libs.rate_limit import RedisLimiter
from promocodes_service.adapters.event_codec import (
    encode_campaign_events,
    encode_code_events,
    encode_usage_events,
)
from promocodes_service.adapters.migrations import MIGRATIONS
from promocodes_service.adapters.mongo_campaigns import MongoCampaignRepository
from promocodes_service.adapters.mongo_codes import MongoPromoCodeRepository
from promocodes_service.adapters.mongo_usages import MongoUsageRepository
from promocodes_service.config import PromocodesSettings
from promocodes_service.entrypoints.grpc_servicer import PromoCodeServicer
from promocodes_service.entrypoints.limits import LIMITS
from promocodes_service.entrypoints.policy import POLICY
from promocodes_service.service_layer.campaigns import Campaigns
from promocodes_service.service_layer.catalogue import Catalogue
from promocodes_service.service_layer.redemption import Redemptions
from promocodes_service.service_layer.sweep import Sweeper

SERVICE_NAME = promo_codes_pb2.DESCRIPTOR.services_by_name["PromoCodeService"].full_name


@dataclass
class Assembly:
    """Everything built from the settings, for the server and the operator commands alike."""

    store: MongoStore
    codes: MongoPromoCodeRepository
    usages: MongoUsageRepository
    users: GrpcUserDirectory
    sweeper: Sweeper
    catalogue: Catalogue
    redemptions: Redemptions
    campaigns: Campaigns


async def assemble(settings: PromocodesSettings, kit: ServiceKit) -> Assembly:
    """Connects, migrates and assembles the use cases; nothing happens at import time."""
    codes_collection = MongoPromoCodeRepository.collection_name
    usages_collection = MongoUsageRepository.collection_name
    campaigns_collection = MongoCampaignRepository.collection_name
    store = await kit.mongo(
        settings,
        MIGRATIONS,
        relayed=[codes_collection, usages_collection, campaigns_collection],
    )
    codes = MongoPromoCodeRepository(store.db, encode_code_events, store.notifier(codes_collection))
    usages = MongoUsageRepository(store.db, encode_usage_events, store.notifier(usages_collection))
    campaigns = MongoCampaignRepository(
        store.db, encode_campaign_events, store.notifier(campaigns_collection)
    )
    users = GrpcUserDirectory(kit.channel(settings.users_addr), settings.users_timeout_seconds)
    sweeper = Sweeper(
        codes, usages, utc_now, timedelta(seconds=settings.sweep_stale_seconds), campaigns
    )
    return Assembly(
        store,
        codes,
        usages,
        users,
        sweeper,
        Catalogue(codes, campaigns, new_id, utc_now),
        Redemptions(codes, usages, users, sweeper, new_id, utc_now, campaigns=campaigns),
        Campaigns(campaigns, new_id, utc_now),
    )


async def build(settings: PromocodesSettings) -> GrpcApp:
    kit = ServiceKit(settings, serving=True)
    assembly = await assemble(settings, kit)
    servicer = PromoCodeServicer(assembly.catalogue, assembly.redemptions, assembly.campaigns)

    async def sweep_loop() -> None:
        await assembly.sweeper.loop(settings.sweep_interval_seconds)

    return kit.app(
        GrpcApp(
            name="promocodes",
            service_names=[SERVICE_NAME],
            policies=[POLICY],
            limits=LIMITS,
            limiter=RedisLimiter(kit.redis(settings)),
            register=lambda server: promo_codes_pb2_grpc.add_PromoCodeServiceServicer_to_server(
                servicer, server
            ),
            probes={"users": assembly.users.ping},
            peers={"users"},
            background=[sweep_loop],
        )
    )
