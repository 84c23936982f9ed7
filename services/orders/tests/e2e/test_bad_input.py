"""Every field of every OrderService request given bad values: a clear status, never INTERNAL,
and nothing written (neither an order here nor a usage in PromoCodeService)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import grpc
import pytest

from devstack.stack import Stack
from promo.v1 import common_pb2, orders_pb2
from promo_libs.grpc.errors import bad_request, error_info

from .conftest import Clients, Platform, eur, new_code, new_user, start_platform, usages_of

UNKNOWN_ID = "0123456789abcdef01234567"
# The longest string a request can carry under the 64 KiB receive limit (oversized: below).
HUGE = "x" * 60_000
INVALID = grpc.StatusCode.INVALID_ARGUMENT

Call = Callable[[Clients, dict[str, str]], Awaitable[Any]]


@pytest.fixture(scope="module")
def platform(stack: Stack) -> Iterator[Platform]:
    running = start_platform(stack, "badinput")
    yield running
    running.stop()


def create(
    user: str = "{user}",
    amount: common_pb2.Money | None = None,
    code: str | None = "{code}",
    key: str = "fresh-key",
    omit_amount: bool = False,
) -> Call:
    def call(clients: Clients, known: dict[str, str]) -> Awaitable[Any]:
        request = orders_pb2.CreateOrderRequest(
            user_id=user.format(**known), idempotency_key=key.format(**known)
        )
        if not omit_amount:
            request.amount.CopyFrom(amount if amount is not None else eur(5000))
        if code is not None:
            request.promo_code = code.format(**known)
        return clients.orders.CreateOrder(request)

    return call


def money(currency: str, amount: int) -> common_pb2.Money:
    return common_pb2.Money(currency_code=currency, amount_minor=amount)


def get(order_id: str) -> Call:
    return lambda clients, _: clients.orders.GetOrder(orders_pb2.GetOrderRequest(id=order_id))


def cancel(order_id: str, reason: str = "") -> Call:
    return lambda clients, known: clients.orders.CancelOrder(
        orders_pb2.CancelOrderRequest(id=order_id.format(**known), reason=reason)
    )


def list_orders(**fields: Any) -> Call:
    return lambda clients, _: clients.orders.ListOrders(orders_pb2.ListOrdersRequest(**fields))


def ts(seconds: int, nanos: int = 0) -> Any:
    from google.protobuf.timestamp_pb2 import Timestamp

    return Timestamp(seconds=seconds, nanos=nanos)


def time_range(**fields: Any) -> Call:
    return list_orders(create_time_range=common_pb2.TimeRange(**fields))


CASES: list[tuple[str, Call, grpc.StatusCode, str]] = [
    ("create: no user", create(user=""), INVALID, "user_id"),
    ("create: malformed user", create(user="../etc"), INVALID, "user_id"),
    ("create: huge user", create(user=HUGE), INVALID, "user_id"),
    ("create: no amount", create(omit_amount=True), INVALID, "amount"),
    ("create: zero amount", create(amount=eur(0)), INVALID, "amount.amount_minor"),
    ("create: negative amount", create(amount=eur(-5)), INVALID, "amount.amount_minor"),
    ("create: absurd amount", create(amount=eur(2**62)), INVALID, "amount.amount_minor"),
    ("create: no currency", create(amount=money("", 100)), INVALID, "amount.currency_code"),
    ("create: lower currency", create(amount=money("eur", 100)), INVALID, "amount.currency_code"),
    ("create: long currency", create(amount=money("EURO", 100)), INVALID, "amount.currency_code"),
    (
        "create: unassigned currency",
        create(amount=money("ABC", 100)),
        INVALID,
        "amount.currency_code",
    ),
    (
        "create: withdrawn currency",
        create(amount=money("DEM", 100)),
        INVALID,
        "amount.currency_code",
    ),
    ("create: empty code", create(code=""), INVALID, "promo_code"),
    ("create: short code", create(code="ab"), INVALID, "promo_code"),
    ("create: code with spaces", create(code="SAVE 10"), INVALID, "promo_code"),
    ("create: huge code", create(code=HUGE), INVALID, "promo_code"),
    ("create: no key", create(key=""), INVALID, "idempotency_key"),
    ("create: long key", create(key="k" * 129), INVALID, "idempotency_key"),
    ("create: key with NUL", create(key="a\x00b"), INVALID, "idempotency_key"),
    (
        "create: unknown user",
        create(user=UNKNOWN_ID),
        grpc.StatusCode.NOT_FOUND,
        "USER_NOT_FOUND",
    ),
    (
        "create: key reused for another amount",
        create(key="{key}", amount=eur(1)),
        grpc.StatusCode.ALREADY_EXISTS,
        "IDEMPOTENCY_KEY_REUSED",
    ),
    ("get: empty id", get(""), INVALID, "id"),
    ("get: malformed id", get("../../x"), INVALID, "id"),
    ("get: huge id", get(HUGE), INVALID, "id"),
    ("get: unknown id", get(UNKNOWN_ID), grpc.StatusCode.NOT_FOUND, "ORDER_NOT_FOUND"),
    ("cancel: empty id", cancel(""), INVALID, "id"),
    ("cancel: long reason", cancel("{order}", "r" * 501), INVALID, "reason"),
    ("cancel: unknown id", cancel(UNKNOWN_ID), grpc.StatusCode.NOT_FOUND, "ORDER_NOT_FOUND"),
    ("list: negative size", list_orders(page_size=-1), INVALID, "page_size"),
    ("list: garbage token", list_orders(page_token="%%%"), INVALID, "page_token"),
    ("list: forged token", list_orders(page_token="eyJhIjoxfQ"), INVALID, "page_token"),
    ("list: huge token", list_orders(page_token=HUGE), INVALID, "page_token"),
    ("list: bad user", list_orders(user_id="a b"), INVALID, "user_id"),
    ("list: unknown status", list_orders(status=42), INVALID, "status"),
    (
        "list: inverted range",
        list_orders(create_time_range=common_pb2.TimeRange(start_time=ts(200), end_time=ts(100))),
        INVALID,
        "create_time_range",
    ),
    # Beyond what a Timestamp (and a datetime) holds: was INTERNAL from ToDatetime().
    (
        "list: start before year 1",
        time_range(start_time=ts(-62135596801)),
        INVALID,
        "create_time_range.start_time",
    ),
    ("list: end at 2**40 s", time_range(end_time=ts(2**40)), INVALID, "create_time_range.end_time"),
    (
        "list: negative nanos",
        time_range(start_time=ts(0, -1)),
        INVALID,
        "create_time_range.start_time",
    ),
    (
        "list: nanos of 1 s",
        time_range(end_time=ts(0, 10**9)),
        INVALID,
        "create_time_range.end_time",
    ),
]


def snapshot(orders_db: Any) -> list[dict[str, Any]]:
    # The relay clears published events on its own schedule: compare the orders themselves.
    return list(orders_db.orders.find({}, {"outbox": 0, "outbox_pending": 0}).sort("_id", 1))


@pytest.mark.parametrize(("case", "call", "code", "detail"), CASES, ids=[c[0] for c in CASES])
async def test_bad_input_is_refused_clearly_and_writes_nothing(
    clients: Clients,
    orders_db: Any,
    case: str,
    call: Call,
    code: grpc.StatusCode,
    detail: str,
) -> None:
    user = await new_user(clients)
    promo = await new_code(clients)
    existing = await clients.orders.CreateOrder(
        orders_pb2.CreateOrderRequest(
            user_id=user.id, amount=eur(5000), idempotency_key=f"keep-{user.id}"
        )
    )
    known = {"user": user.id, "code": promo.code, "key": f"keep-{user.id}", "order": existing.id}
    before = snapshot(orders_db)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(clients, known)
    error = caught.value
    assert error.code() == code, f"{case}: {error.code()} {error.details()}"
    if code == INVALID:
        violations = bad_request(error)
        assert violations is not None, case
        assert detail in [v.field for v in violations.field_violations], case
        assert all(v.description for v in violations.field_violations)
    else:
        info = error_info(error)
        assert info is not None and info.reason == detail and info.domain == "promo.v1"
    assert snapshot(orders_db) == before, f"{case} changed the database"
    assert await usages_of(clients, promo.id) == []


async def test_a_request_beyond_the_receive_limit_is_refused_before_parsing(
    clients: Clients, orders_db: Any
) -> None:
    before = snapshot(orders_db)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        # Above the 1 MiB receive limit (sized for a 1000-line cart, orders config).
        await create(key="k" * 1_100_000)(clients, {"user": UNKNOWN_ID, "code": "SAVE10"})
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, caught.value.details()
    assert snapshot(orders_db) == before
