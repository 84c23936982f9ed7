"""One request id across the three services: the id a CreateOrder arrives with is sent on every
call it makes (orders -> users, orders -> promocodes, promocodes -> users), and each callee logs
it, so one order's lines can be joined across services (DESIGN.md: "a request id, forwarded to
every call it makes")."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from devstack.service import ServiceProcess
from devstack.stack import Stack
from promo.v1 import orders_pb2, promo_codes_pb2, promo_codes_pb2_grpc
from promo_libs.grpc.client import REQUEST_ID_HEADER

from .conftest import Clients, Platform, eur, new_code, new_user, order_request, start_platform


@pytest.fixture(scope="module")
def platform(stack: Stack) -> Iterator[Platform]:
    running = start_platform(stack, "reqid")
    yield running
    running.stop()


def _served(service: ServiceProcess, request_id: str) -> list[str]:
    """The RPCs `service` logged as served under `request_id` (its access-log lines)."""
    lines: list[dict[str, Any]] = []
    for line in service.log_path.read_text(encoding="utf-8").splitlines():
        if request_id in line and line.startswith("{"):
            lines.append(json.loads(line))
    return [
        str(entry["rpc"])
        for entry in lines
        if entry.get("event") == "rpc" and entry.get("request_id") == request_id
    ]


async def test_create_order_carries_its_request_id_to_every_service(
    clients: Clients, platform: Platform
) -> None:
    user = await new_user(clients)
    code = await new_code(clients)
    request_id = f"req-{uuid.uuid4().hex}"
    order = await clients.orders.CreateOrder(
        order_request(user.id, code.code), metadata=((REQUEST_ID_HEADER, request_id),)
    )
    assert order.status == orders_pb2.ORDER_STATUS_CONFIRMED
    # Each service logs its access line before it answers, so all are written by now.
    assert "CreateOrder" in _served(platform.orders, request_id)
    assert "RedeemPromoCode" in _served(platform.promocodes, request_id)
    assert "GetUser" in _served(platform.users, request_id)


async def test_promocodes_carries_the_request_id_to_users(
    clients: Clients, platform: Platform
) -> None:
    """The hop promocodes -> users on its own: a redemption as the order saga makes it."""
    user = await new_user(clients)
    code = await new_code(clients)
    request_id = f"req-{uuid.uuid4().hex}"
    async with platform.promocodes.channel("orders") as saga:
        await promo_codes_pb2_grpc.PromoCodeServiceStub(saga).RedeemPromoCode(
            promo_codes_pb2.RedeemPromoCodeRequest(
                code=code.code,
                user_id=user.id,
                order_amount=eur(1000),
                redemption_id=uuid.uuid4().hex,
            ),
            metadata=((REQUEST_ID_HEADER, request_id),),
        )
    assert "RedeemPromoCode" in _served(platform.promocodes, request_id)
    assert "GetUser" in _served(platform.users, request_id)
