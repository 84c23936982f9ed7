"""Cross-service end-to-end tests: their helper modules (pipeline_support) sit beside them,
and the fixtures of the tests that run the whole pipeline (test_pipeline, test_order_lines_rebuild):
the platform on the session's stack, once per module, and gRPC clients of it. A module with a
platform of its own (test_hostile_requests, test_zero_trust) defines its own `platform`."""

import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

sys.path.insert(0, str(Path(__file__).parent))

from pipeline_support import Clients, Platform, start_platform

from devstack.stack import Stack
from promo.v1 import orders_pb2_grpc, promo_codes_pb2_grpc, users_pb2_grpc


@pytest.fixture(scope="module")
def platform(stack: Stack) -> Iterator[Platform]:
    running = start_platform(stack)
    try:
        yield running
    finally:
        running.stop()


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def clients(platform: Platform) -> AsyncIterator[Clients]:
    async with (
        platform.users.channel() as users,
        platform.promocodes.channel() as codes,
        platform.orders.channel() as orders,
    ):
        yield Clients(
            users_pb2_grpc.UserServiceStub(users),
            promo_codes_pb2_grpc.PromoCodeServiceStub(codes),
            orders_pb2_grpc.OrderServiceStub(orders),
        )
