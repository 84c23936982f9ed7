"""I5 by property: every RPC of every service, fed requests built from its protobuf descriptor with
hostile values in every field, over real gRPC against running services.

For every call: the status is never INTERNAL or UNKNOWN; a refusal that names a reason carries
one (BadRequest field violations for INVALID_ARGUMENT, an ErrorInfo reason otherwise); and a
refused call writes nothing -- every document of every MongoDB collection of the three owning
services is compared before and after it. The one documented exception: CreateOrder refused
for its promo code keeps that order REJECTED, for audit and idempotent retries (orders.proto),
so exactly that one new REJECTED order is allowed.

Values are drawn per field type: empty, huge, negative, extreme integers, unknown enum numbers,
Timestamps outside years 1..9999 and nanos outside a second, unknown and known ids, currencies
that are not ISO 4217, long and deep repeated fields (carts of 1001 lines with duplicate skus
included), and Unicode oddities (bidi overrides, NUL,
combining marks, BOM, emoji). Example counts are kept small so the module runs in well under a
minute on a loaded two-core machine.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pymongo
import pytest
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devstack.ports import free_port
from devstack.service import ServiceProcess
from devstack.stack import Stack
from promo.v1 import (
    analytics_pb2,
    common_pb2,
    orders_pb2,
    promo_codes_pb2,
    users_pb2,
)
from promo_libs import analytics_schema
from promo_libs.clickhouse.client import ClickHouse
from promo_libs.grpc.errors import bad_request, error_info
from promo_libs.identity import Workload

EXAMPLES_PER_METHOD = 8
CALL_TIMEOUT = 20.0
FORBIDDEN = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
# Refusals that are the caller's business carry a stable reason (DESIGN.md, Contracts).
NEEDS_REASON = {
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
}
SERVICES = {
    "users": users_pb2.DESCRIPTOR.services_by_name["UserService"],
    "promocodes": promo_codes_pb2.DESCRIPTOR.services_by_name["PromoCodeService"],
    "orders": orders_pb2.DESCRIPTOR.services_by_name["OrderService"],
    "analytics": analytics_pb2.DESCRIPTOR.services_by_name["AnalyticsService"],
}
COLLECTIONS = {
    "users": ["users"],
    "promocodes": ["promo_codes", "promo_code_usages"],
    "orders": ["orders"],
}
# Written after the change by the relay on its own schedule, not by the call.
VOLATILE = {"outbox": 0, "outbox_pending": 0}
COMMON_ENV = {
    "METRICS_PORT": "0",
    "HEALTH_CHECK_INTERVAL_SECONDS": "0.5",
    "SHUTDOWN_GRACE_SECONDS": "2",
}
UNKNOWN_ID = "0123456789abcdef01234567"
ODD_TEXT = [
    "",
    " ",
    "x" * 60_000,
    "\x00",
    "a\x00b",
    "\u202eevil",
    "\ufeffBOM",
    "e\u0301\u0301\u0301",
    "\U0001f600" * 50,
    "\u0085next",
    "../../etc/passwd",
    "$where",
    "a.b.c",
    "{}",
    "ABC",
    "EUR",
    "JPY",
    "KWD",
    "XXX",
    "eur",
    "DEM",
    UNKNOWN_ID,
]


@dataclass
class Platform:
    services: dict[str, ServiceProcess]
    databases: dict[str, str]
    known: dict[str, list[str]] = field(default_factory=dict)
    channels: dict[tuple[str, str], grpc.Channel] = field(default_factory=dict)

    def channel_for(self, service: str, method: str) -> grpc.Channel:
        """The one place a channel is opened, per method: the caller's identity (when mutual TLS
        with per-method authorization lands) can be chosen here for each method."""
        key = (service, method)
        if key not in self.channels:
            self.channels[key] = self.services[service].sync_channel(_caller_for(service, method))
        return self.channels[key]

    def close(self) -> None:
        for channel in self.channels.values():
            channel.close()
        for service in reversed(self.services.values()):
            service.terminate()


def _caller_for(service: str, method: str) -> str:
    """An identity the service's policy lets call `method`, so that hostile values reach the
    method's own validation rather than stopping at authorization (tests/e2e/test_zero_trust.py
    covers refusals): back-office where it may, else the one workload the table names first."""
    from analytics_service.entrypoints.policy import POLICY as ANALYTICS
    from orders_service.entrypoints.policy import POLICY as ORDERS
    from promocodes_service.entrypoints.policy import POLICY as PROMOCODES
    from users_service.entrypoints.policy import POLICY as USERS

    policy = {"users": USERS, "promocodes": PROMOCODES, "orders": ORDERS, "analytics": ANALYTICS}
    allowed = policy[service].methods[method]
    if Workload.BACK_OFFICE in allowed:
        return Workload.BACK_OFFICE.value
    return sorted(allowed)[0].value


def _migrate_clickhouse(stack: Stack, database: str) -> None:
    async def run() -> None:
        clickhouse = ClickHouse(stack.clickhouse_settings(database))
        try:
            clickhouse.connect()
            await analytics_schema.migrate(clickhouse.client, clickhouse.database)
        finally:
            await clickhouse.close()

    asyncio.run(run())


def _seed(platform: Platform) -> None:
    """One user, one code and one order, so that hostile values also include ids that exist."""
    users = platform.services["users"].sync_channel()
    promos = platform.services["promocodes"].sync_channel()
    orders = platform.services["orders"].sync_channel()
    try:
        user = users.unary_unary(
            "/promo.v1.UserService/CreateUser",
            request_serializer=users_pb2.CreateUserRequest.SerializeToString,
            response_deserializer=users_pb2.User.FromString,
        )(
            users_pb2.CreateUserRequest(
                user=users_pb2.User(email="hostile.seed@example.com", display_name="Seed"),
                password="correct horse battery",
            ),
            timeout=CALL_TIMEOUT,
        )
        code = promos.unary_unary(
            "/promo.v1.PromoCodeService/CreatePromoCode",
            request_serializer=promo_codes_pb2.CreatePromoCodeRequest.SerializeToString,
            response_deserializer=promo_codes_pb2.PromoCode.FromString,
        )(
            promo_codes_pb2.CreatePromoCodeRequest(
                promo_code=promo_codes_pb2.PromoCode(
                    code="HOSTILE10",
                    percentage=promo_codes_pb2.PercentageDiscount(basis_points=1000),
                    max_uses=1000,
                )
            ),
            timeout=CALL_TIMEOUT,
        )
        order = orders.unary_unary(
            "/promo.v1.OrderService/CreateOrder",
            request_serializer=orders_pb2.CreateOrderRequest.SerializeToString,
            response_deserializer=orders_pb2.Order.FromString,
        )(
            orders_pb2.CreateOrderRequest(
                user_id=user.id,
                amount=common_pb2.Money(currency_code="EUR", amount_minor=5000),
                promo_code=code.code,
                idempotency_key="seed-1",
            ),
            timeout=CALL_TIMEOUT,
        )
    finally:
        for channel in (users, promos, orders):
            channel.close()
    platform.known = {
        "id": [user.id, code.id, order.id, UNKNOWN_ID],
        "code": [code.code, code.code.lower(), "NO-SUCH-CODE"],
        "email": [user.email, user.email.upper(), "nobody@example.com", "not an email"],
    }


@pytest.fixture(scope="module")
def platform(stack: Stack) -> Iterator[Platform]:
    token = uuid.uuid4().hex[:8]
    databases = {name: f"hostile_{name[:2]}_{token}" for name in COLLECTIONS}
    clickhouse_db = f"hostile_{token}"
    _migrate_clickhouse(stack, clickhouse_db)

    def start(name: str, module: str, env: dict[str, str]) -> ServiceProcess:
        service = stack.service(
            f"{name}-hostile",
            [sys.executable, "-m", module],
            free_port(),
            {**COMMON_ENV, **env},
        )
        service.start_and_wait()
        return service

    users = start(
        "users",
        "users_service",
        {
            "MONGODB_DB_NAME": databases["users"],
            "ARGON2_MEMORY_KIB": "8192",
            "ARGON2_TIME_COST": "1",
            "ARGON2_PARALLELISM": "1",
        },
    )
    promocodes = start(
        "promocodes",
        "promocodes_service",
        {"MONGODB_DB_NAME": databases["promocodes"], "USERS_ADDR": users.address},
    )
    orders = start(
        "orders",
        "orders_service",
        {
            "MONGODB_DB_NAME": databases["orders"],
            "USERS_ADDR": users.address,
            "PROMOCODES_ADDR": promocodes.address,
        },
    )
    analytics = start("analytics", "analytics_service", {"CLICKHOUSE_DATABASE": clickhouse_db})
    running = Platform(
        {"users": users, "promocodes": promocodes, "orders": orders, "analytics": analytics},
        databases,
    )
    try:
        _seed(running)
        yield running
    finally:
        running.close()


@pytest.fixture(scope="module")
def mongo(stack: Stack) -> Iterator[pymongo.MongoClient[dict[str, Any]]]:
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(stack.mongo_uri)
    try:
        yield client
    finally:
        client.close()


# --- values ------------------------------------------------------------------------------------

_INT_EDGES = {
    FieldDescriptor.TYPE_INT32: [0, 1, -1, 2**31 - 1, -(2**31)],
    FieldDescriptor.TYPE_SINT32: [0, 1, -1, 2**31 - 1, -(2**31)],
    FieldDescriptor.TYPE_SFIXED32: [0, 1, -1, 2**31 - 1, -(2**31)],
    FieldDescriptor.TYPE_INT64: [0, 1, -1, 2**31, 2**53 + 1, 2**63 - 1, -(2**63)],
    FieldDescriptor.TYPE_SINT64: [0, 1, -1, 2**63 - 1, -(2**63)],
    FieldDescriptor.TYPE_SFIXED64: [0, 1, -1, 2**63 - 1, -(2**63)],
    FieldDescriptor.TYPE_UINT32: [0, 1, 2**32 - 1],
    FieldDescriptor.TYPE_FIXED32: [0, 1, 2**32 - 1],
    FieldDescriptor.TYPE_UINT64: [0, 1, 2**64 - 1],
    FieldDescriptor.TYPE_FIXED64: [0, 1, 2**64 - 1],
}
# Around the edges of google.protobuf.Timestamp (years 1..9999) and of ClickHouse's DateTime.
_SECONDS = [-62_135_596_801, -62_135_596_800, -(2**40), -1, 0, 1_767_225_600, 2**32, 2**40,
            253_402_300_799, 253_402_300_800, 2**63 - 1, -(2**63)]  # fmt: skip
_NANOS = [0, 1, 999_999_999, 1_000_000_000, -1, 2**31 - 1, -(2**31)]


def _strings(platform: Platform, name: str) -> st.SearchStrategy[str]:
    known: list[str] = []
    if name.endswith("id") or name.endswith("ids") or name == "parent":
        known = platform.known["id"]
    elif name in ("code", "code_prefix", "promo_code", "prefix"):
        known = platform.known["code"]
    elif name == "email":
        known = platform.known["email"]
    return st.one_of(st.sampled_from(ODD_TEXT + known), st.text(max_size=30), st.just("k" * 129))


def _scalar(platform: Platform, fd: FieldDescriptor) -> st.SearchStrategy[Any]:
    if fd.type == FieldDescriptor.TYPE_STRING:
        return _strings(platform, fd.name)
    if fd.type == FieldDescriptor.TYPE_BYTES:
        return st.sampled_from([b"", b"\x00" * 10, b"\xff" * 70_000])
    if fd.type == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if fd.type == FieldDescriptor.TYPE_ENUM:
        assert fd.enum_type is not None
        numbers = [v.number for v in fd.enum_type.values]
        return st.sampled_from([*numbers, -1, max(numbers) + 1, 2**31 - 1])
    if fd.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return st.sampled_from([0.0, -1.0, float("nan"), float("inf"), 1e308])
    return st.sampled_from(_INT_EDGES[fd.type])


def _field_mask(descriptor: Descriptor) -> st.SearchStrategy[Message]:
    from google.protobuf.field_mask_pb2 import FieldMask

    # The update requests' masks name fields of the resource beside them.
    names = sorted({f.name for f in descriptor.fields} | {"id", "nope", "a.b", "", "*"})
    return st.lists(st.sampled_from(names), max_size=4).map(lambda paths: FieldMask(paths=paths))


def _message(platform: Platform, descriptor: Descriptor, depth: int) -> st.SearchStrategy[Any]:
    if descriptor.full_name == "google.protobuf.Timestamp":
        from google.protobuf.timestamp_pb2 import Timestamp

        return st.builds(
            lambda s, n: Timestamp(seconds=s, nanos=n),
            st.sampled_from(_SECONDS),
            st.sampled_from(_NANOS),
        )
    if descriptor.full_name == "google.protobuf.FieldMask":
        return _field_mask(descriptor.containing_type or descriptor)
    return st.composite(lambda draw: _fill(draw, platform, descriptor, depth))()


def _value(platform: Platform, fd: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    if fd.message_type is not None:
        return _message(platform, fd.message_type, depth + 1)
    return _scalar(platform, fd)


def _fill_map(
    draw: Any, platform: Platform, message: Message, fd: FieldDescriptor, depth: int
) -> None:
    entry = fd.message_type
    assert entry is not None
    key_fd, value_fd = entry.fields_by_name["key"], entry.fields_by_name["value"]
    container = getattr(message, fd.name)
    for _ in range(draw(st.integers(0, 3))):
        key, value = draw(_scalar(platform, key_fd)), draw(_value(platform, value_fd, depth))
        if value_fd.message_type is not None:
            container[key].CopyFrom(value)
        else:
            container[key] = value


def _fill_repeated(
    draw: Any, platform: Platform, message: Message, fd: FieldDescriptor, depth: int
) -> None:
    size = draw(st.sampled_from([0, 1, 3, 1001]))
    items = [draw(_value(platform, fd, depth)) for _ in range(min(size, 3))]
    if size == 1001 and items and fd.message_type is None:
        # One more than any list allows; short elements keep the request under the receive
        # limit, so the count check (not the transport) is what answers.
        items = [i[:64] if isinstance(i, str) else i for i in items]
        items = (items * 1001)[:1001]
    elif size == 1001 and items and fd.full_name.endswith(".lines"):
        # Carts: one line more than promo_libs.carts allows, and the copies make duplicate skus.
        # Only small lines are copied, so the request stays under the receive limit.
        per_line = max(item.ByteSize() for item in items)
        if per_line * 1001 < 512 * 1024:
            items = (items * 1001)[:1001]
    container = getattr(message, fd.name)
    for item in items:
        if fd.message_type is not None:
            container.add().CopyFrom(item)
        else:
            container.append(item)


def _fill(draw: Any, platform: Platform, descriptor: Descriptor, depth: int) -> Message:
    message: Message = message_factory.GetMessageClass(descriptor)()
    for fd in descriptor.fields:
        # Most fields set, so that most examples carry several hostile values at once.
        if depth > 3 or draw(st.integers(0, 3)) == 0:
            continue
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            _fill_map(draw, platform, message, fd, depth)
        elif fd.is_repeated:
            _fill_repeated(draw, platform, message, fd, depth)
        elif fd.message_type is not None:
            getattr(message, fd.name).CopyFrom(draw(_value(platform, fd, depth)))
        else:
            setattr(message, fd.name, draw(_value(platform, fd, depth)))
    return message


def _request_strategy(platform: Platform, method: MethodDescriptor) -> st.SearchStrategy[Any]:
    request = method.input_type
    resource = next(
        (f.message_type for f in request.fields if f.message_type is not None
         and f.message_type.full_name.startswith("promo.v1.")), request,
    )  # fmt: skip

    def build(draw: Any) -> Message:
        message = _fill(draw, platform, request, 0)
        mask = request.fields_by_name.get("update_mask")
        if mask is not None and draw(st.booleans()):
            message.update_mask.CopyFrom(draw(_field_mask(resource)))  # type: ignore[attr-defined]
        return message

    return st.composite(build)()


# --- the property --------------------------------------------------------------------------------


def _snapshot(mongo: pymongo.MongoClient[dict[str, Any]], platform: Platform) -> dict[str, Any]:
    state: dict[str, Any] = {}
    for service, collections in COLLECTIONS.items():
        database = mongo[platform.databases[service]]
        for name in collections:
            documents = database[name].find({}, VOLATILE).sort("_id", 1)
            state[f"{service}.{name}"] = {
                str(d["_id"]): hashlib.sha1(
                    json.dumps(d, sort_keys=True, default=str).encode()
                ).hexdigest()
                for d in documents
            }
    return state


def _kept_rejected_order(
    mongo: pymongo.MongoClient[dict[str, Any]],
    platform: Platform,
    method: str,
    error: grpc.RpcError,
    before: dict[str, Any],
    after: dict[str, Any],
) -> bool:
    """CreateOrder refused for its promo code keeps the order REJECTED (orders.proto)."""
    info = error_info(error)
    if method != "CreateOrder" or info is None or "order_id" not in info.metadata:
        return False
    order_id = info.metadata["order_id"]
    added = set(after["orders.orders"]) - set(before["orders.orders"])
    rest_same = all(after[k] == before[k] for k in before if k != "orders.orders")
    kept = {k: v for k, v in after["orders.orders"].items() if k != order_id}
    stored = mongo[platform.databases["orders"]].orders.find_one({"_id": order_id})
    return (
        added <= {order_id}
        and kept == before["orders.orders"]
        and rest_same
        and stored is not None
        and stored.get("status") == "REJECTED"
    )


def _voided_unknown_redemption(
    mongo: pymongo.MongoClient[dict[str, Any]],
    platform: Platform,
    method: str,
    error: grpc.RpcError,
    before: dict[str, Any],
    after: dict[str, Any],
) -> bool:
    """ReleasePromoCode of an id with no usage answers NOT_FOUND and leaves a VOIDED tombstone
    under that id, so that a Redeem arriving later cannot take a use nobody gives back
    (services/promocodes/README.md). That one document is the only write allowed."""
    if method != "ReleasePromoCode" or error.code() != grpc.StatusCode.NOT_FOUND:
        return False
    key = "promocodes.promo_code_usages"
    added = set(after[key]) - set(before[key])
    kept = {k: v for k, v in after[key].items() if k not in added}
    rest_same = all(after[k] == before[k] for k in before if k != key)
    usages = mongo[platform.databases["promocodes"]].promo_code_usages
    return (
        len(added) == 1
        and kept == before[key]
        and rest_same
        and all((usages.find_one({"_id": k}) or {}).get("status") == "VOIDED" for k in added)
    )


def _cases() -> list[tuple[str, str]]:
    return [(service, m.name) for service, d in SERVICES.items() for m in d.methods]


@pytest.mark.parametrize(("service", "method"), _cases(), ids=[f"{s}.{m}" for s, m in _cases()])
def test_hostile_requests_never_fail_internally_and_refusals_write_nothing(
    platform: Platform,
    mongo: pymongo.MongoClient[dict[str, Any]],
    service: str,
    method: str,
) -> None:
    descriptor = SERVICES[service].methods_by_name[method]
    request_class = message_factory.GetMessageClass(descriptor.input_type)
    response_class = message_factory.GetMessageClass(descriptor.output_type)
    call: Callable[..., Any] = platform.channel_for(service, method).unary_unary(
        f"/{SERVICES[service].full_name}/{method}",
        request_serializer=request_class.SerializeToString,
        response_deserializer=response_class.FromString,
    )

    @settings(
        max_examples=EXAMPLES_PER_METHOD,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(_request_strategy(platform, descriptor))
    def property(request: Message) -> None:
        before = _snapshot(mongo, platform)
        try:
            call(request, timeout=CALL_TIMEOUT)
        except grpc.RpcError as error:
            code = error.code()
            assert code not in FORBIDDEN, f"{method}: {code} {error.details()}"
            if code == grpc.StatusCode.INVALID_ARGUMENT:
                violations = bad_request(error)
                info = error_info(error)
                assert (violations is not None and violations.field_violations) or (
                    info is not None and info.reason
                ), f"{method}: INVALID_ARGUMENT without field violations or reason"
            elif code in NEEDS_REASON:
                info = error_info(error)
                assert info is not None and info.reason, f"{method}: {code} without a reason"
            after = _snapshot(mongo, platform)
            assert (
                after == before
                or _kept_rejected_order(mongo, platform, method, error, before, after)
                or _voided_unknown_redemption(mongo, platform, method, error, before, after)
            ), f"{method} refused with {code} but wrote"

    property()


def test_every_rpc_of_every_service_is_covered() -> None:
    # A new RPC is fed hostile values without anyone adding it here.
    pool = descriptor_pool.Default()
    for name in ("promo.v1.UserService", "promo.v1.PromoCodeService", "promo.v1.OrderService",
                 "promo.v1.AnalyticsService"):  # fmt: skip
        service = pool.FindServiceByName(name)
        assert {(name, m.name) for m in service.methods} <= {
            (SERVICES[s].full_name, m) for s, m in _cases()
        }
