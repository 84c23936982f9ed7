"""Use cases wired with in-memory fakes and a controllable clock."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from promocodes_service.service_layer.catalogue import Catalogue
from promocodes_service.service_layer.redemption import Redemptions
from promocodes_service.service_layer.sweep import Sweeper
from promocodes_testing.memory import (
    FakeUserDirectory,
    InMemoryCampaignRepository,
    InMemoryPromoCodeRepository,
    InMemoryUsageRepository,
)


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class App:
    codes: InMemoryPromoCodeRepository
    usages: InMemoryUsageRepository
    users: FakeUserDirectory
    clock: Clock
    catalogue: Catalogue
    redemptions: Redemptions
    sweeper: Sweeper
    campaigns: InMemoryCampaignRepository


@pytest.fixture
def app() -> App:
    counter = itertools.count(1)

    def new_id() -> str:
        return f"id{next(counter):06d}"

    codes, usages, users, clock = (
        InMemoryPromoCodeRepository(),
        InMemoryUsageRepository(),
        FakeUserDirectory(),
        Clock(),
    )
    campaigns = InMemoryCampaignRepository()
    sweeper = Sweeper(codes, usages, clock, timedelta(seconds=30), campaigns)
    for name in ("alice", "bob", "carol"):
        users.add(name)
    users.add("dormant", active=False)
    return App(
        codes,
        usages,
        users,
        clock,
        Catalogue(codes, campaigns, new_id, clock),
        Redemptions(
            codes, usages, users, sweeper, new_id, clock, campaigns=campaigns, wait_limit=0.05
        ),
        sweeper,
        campaigns,
    )
