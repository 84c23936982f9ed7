"""I7 over the wire: mutual TLS on every port, and each method open to exactly the workloads
its service's policy names.

The expected table below is written from the design's flows, independently of the services'
policy modules; the test calls every method of every service (enumerated from the proto
descriptors, so a new method cannot be missed) as every workload and accepts only two outcomes:
PERMISSION_DENIED with reason METHOD_NOT_ALLOWED where the table says no, anything else where
it says yes (empty requests: INVALID_ARGUMENT, NOT_FOUND or OK) -- never INTERNAL.
"""

from __future__ import annotations

import shutil
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2, message_factory
from google.protobuf.descriptor import MethodDescriptor
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from devstack.pki import DevPki
from devstack.ports import free_port
from devstack.service import ServiceProcess
from devstack.stack import Stack
from promo.v1 import (
    analytics_pb2,
    common_pb2,
    orders_pb2,
    orders_pb2_grpc,
    promo_codes_pb2,
    promo_codes_pb2_grpc,
    users_pb2,
    users_pb2_grpc,
)
from promo_libs.config import TlsPaths
from promo_libs.grpc.client import secure_channel
from promo_libs.grpc.errors import error_info
from promo_libs.identity import Workload

pytestmark = pytest.mark.e2e

W = Workload
STAFF = {W.BACK_OFFICE}

# method -> who may call it (the design's flows, issue 13).
EXPECTED: dict[str, set[Workload]] = {
    "promo.v1.UserService/CreateUser": {W.BACK_OFFICE, W.STOREFRONT},
    "promo.v1.UserService/GetUser": {W.ORDERS, W.PROMOCODES, W.BACK_OFFICE, W.STOREFRONT},
    "promo.v1.UserService/ListUsers": STAFF,
    "promo.v1.UserService/UpdateUser": {W.BACK_OFFICE, W.STOREFRONT},
    "promo.v1.UserService/DeleteUser": STAFF,
    "promo.v1.UserService/AuthenticateUser": {W.STOREFRONT},
    "promo.v1.PromoCodeService/CreatePromoCode": STAFF,
    "promo.v1.PromoCodeService/GetPromoCode": STAFF,
    "promo.v1.PromoCodeService/LookupPromoCode": {W.BACK_OFFICE, W.STOREFRONT},
    "promo.v1.PromoCodeService/ListPromoCodes": STAFF,
    "promo.v1.PromoCodeService/UpdatePromoCode": STAFF,
    "promo.v1.PromoCodeService/DeletePromoCode": STAFF,
    "promo.v1.PromoCodeService/GeneratePromoCodes": STAFF,
    "promo.v1.PromoCodeService/ValidatePromoCode": {W.BACK_OFFICE, W.STOREFRONT, W.ORDERS},
    "promo.v1.PromoCodeService/RedeemPromoCode": {W.ORDERS},
    "promo.v1.PromoCodeService/ReleasePromoCode": {W.ORDERS},
    "promo.v1.PromoCodeService/ListPromoCodeUsages": STAFF,
    "promo.v1.PromoCodeService/CreateCampaign": STAFF,
    "promo.v1.PromoCodeService/GetCampaign": STAFF,
    "promo.v1.PromoCodeService/ListCampaigns": STAFF,
    "promo.v1.PromoCodeService/UpdateCampaign": STAFF,
    "promo.v1.OrderService/CreateOrder": {W.STOREFRONT, W.BACK_OFFICE},
    "promo.v1.OrderService/GetOrder": {W.STOREFRONT, W.BACK_OFFICE},
    "promo.v1.OrderService/ListOrders": {W.STOREFRONT, W.BACK_OFFICE},
    "promo.v1.OrderService/CancelOrder": {W.STOREFRONT, W.BACK_OFFICE},
    **{
        f"promo.v1.AnalyticsService/{m.name}": STAFF
        for m in analytics_pb2.DESCRIPTOR.services_by_name["AnalyticsService"].methods
    },
}
SERVICES = {
    "users": users_pb2.DESCRIPTOR.services_by_name["UserService"],
    "promocodes": promo_codes_pb2.DESCRIPTOR.services_by_name["PromoCodeService"],
    "orders": orders_pb2.DESCRIPTOR.services_by_name["OrderService"],
    "analytics": analytics_pb2.DESCRIPTOR.services_by_name["AnalyticsService"],
}
# What an allowed call with an empty request must never answer (I5).
BROKEN = (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.UNIMPLEMENTED)
COMMON = {"METRICS_PORT": "0", "HEALTH_CHECK_INTERVAL_SECONDS": "0.2"}


@dataclass
class Platform:
    services: dict[str, ServiceProcess]
    pki: DevPki


@pytest.fixture(scope="module")
def platform(stack: Stack) -> Iterator[Platform]:
    token = uuid.uuid4().hex[:8]
    users = stack.service(
        "users-zt",
        [sys.executable, "-m", "users_service"],
        free_port(),
        {**COMMON, "MONGODB_DB_NAME": f"zt_u_{token}", "ARGON2_MEMORY_KIB": "8192"},
    )
    promocodes = stack.service(
        "promocodes-zt",
        [sys.executable, "-m", "promocodes_service"],
        free_port(),
        {**COMMON, "MONGODB_DB_NAME": f"zt_p_{token}", "USERS_ADDR": users.address},
    )
    orders = stack.service(
        "orders-zt",
        [sys.executable, "-m", "orders_service"],
        free_port(),
        {
            **COMMON,
            "MONGODB_DB_NAME": f"zt_o_{token}",
            "USERS_ADDR": users.address,
            "PROMOCODES_ADDR": promocodes.address,
        },
    )
    clickhouse = {"CLICKHOUSE_DATABASE": f"zt_{token}"}
    # The consumer migrates the analytics database when it starts; it reads a stream of its
    # own, so it has nothing to do but serve its (health-only) gRPC port.
    consumer = stack.service(
        "sync-consumer-zt",
        [sys.executable, "-m", "sync_consumer"],
        free_port(),
        {
            **COMMON,
            **clickhouse,
            "STREAMS": f"promo.events.zt-{token}",
            "CONSUMER_GROUP": f"zt-{token}",
        },
    )
    analytics = stack.service(
        "analytics-zt", [sys.executable, "-m", "analytics_service"], free_port(),
        {**COMMON, **clickhouse},
    )  # fmt: skip
    started = [users, promocodes, orders, consumer, analytics]
    try:
        for service in started:
            service.start_and_wait()
        yield Platform(
            {
                "users": users,
                "promocodes": promocodes,
                "orders": orders,
                "analytics": analytics,
                "sync-consumer": consumer,
            },
            stack.pki,
        )
    finally:
        for service in reversed(started):
            service.terminate()


def _call(channel: grpc.aio.Channel, method: MethodDescriptor) -> grpc.aio.UnaryUnaryCall[Any, Any]:
    request_class = message_factory.GetMessageClass(method.input_type)
    response_class = message_factory.GetMessageClass(method.output_type)
    invoke = channel.unary_unary(
        f"/{method.containing_service.full_name}/{method.name}",
        request_serializer=request_class.SerializeToString,
        response_deserializer=response_class.FromString,
    )
    return invoke(request_class(), timeout=20)


def test_the_expected_table_names_every_method() -> None:
    enumerated = {f"{s.full_name}/{m.name}" for s in SERVICES.values() for m in s.methods}
    assert enumerated == set(EXPECTED)


async def test_every_method_as_every_workload_matches_the_table(platform: Platform) -> None:
    mismatches: list[str] = []
    for name, descriptor in SERVICES.items():
        service = platform.services[name]
        for workload in Workload:
            async with service.channel(identity=workload.value) as channel:
                for method in descriptor.methods:
                    full = f"{descriptor.full_name}/{method.name}"
                    allowed = workload in EXPECTED[full]
                    try:
                        await _call(channel, method)
                        code = grpc.StatusCode.OK
                        reason = ""
                    except grpc.aio.AioRpcError as exc:
                        code = exc.code()
                        info = error_info(exc)
                        reason = info.reason if info else ""
                    denied = code == grpc.StatusCode.PERMISSION_DENIED
                    if allowed and (denied or code in BROKEN):
                        mismatches.append(f"{workload} {full}: {code.name}, should be allowed")
                    if not allowed and (not denied or reason != "METHOD_NOT_ALLOWED"):
                        mismatches.append(f"{workload} {full}: {code.name} {reason}, should not")
    assert not mismatches, "\n".join(mismatches)


async def test_health_for_every_workload_reflection_for_operators_only(
    platform: Platform,
) -> None:
    for name, service in platform.services.items():
        for workload in Workload:
            async with service.channel(identity=workload.value) as channel:
                health = await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=""), timeout=10
                )
                assert health.status == health_pb2.HealthCheckResponse.SERVING, (name, workload)
                # A bidirectional stream. A refused caller gets its status before it sends
                # anything (a message sent meanwhile races the server's end of the call, and the
                # Python client then reports its own INTERNAL instead of the server's status).
                stream = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
                    timeout=10
                )
                if workload is W.OPERATOR:
                    await stream.write(reflection_pb2.ServerReflectionRequest(list_services=""))
                    await stream.done_writing()
                    answer = await stream.read()
                    assert isinstance(answer, reflection_pb2.ServerReflectionResponse), name
                    listed = {s.name for s in answer.list_services_response.service}
                    assert "grpc.health.v1.Health" in listed, name
                    assert await stream.code() == grpc.StatusCode.OK, name
                else:
                    code = await stream.code()
                    assert code == grpc.StatusCode.PERMISSION_DENIED, (name, workload, code)


async def _health_code(channel: grpc.aio.Channel) -> grpc.StatusCode:
    try:
        await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


async def test_callers_without_a_certificate_of_our_ca_are_refused(
    platform: Platform, tmp_path: Path
) -> None:
    users = platform.services["users"]
    # Plaintext: the TLS port does not speak it.
    async with grpc.aio.insecure_channel(users.address) as plain:
        assert await _health_code(plain) == grpc.StatusCode.UNAVAILABLE
    # TLS that trusts the server but presents no certificate.
    ca = platform.pki.ca_file.read_bytes()
    anonymous = grpc.ssl_channel_credentials(root_certificates=ca)
    async with grpc.aio.secure_channel(users.address, anonymous) as channel:
        assert await _health_code(channel) == grpc.StatusCode.UNAVAILABLE
    # A certificate with the right SPIFFE ID, signed by another CA.
    forged = DevPki(tmp_path / "other-ca").files("back-office")
    impostor = TlsPaths(forged.cert, forged.key, platform.pki.ca_file)
    async with secure_channel(users.address, impostor) as channel:
        assert await _health_code(channel) == grpc.StatusCode.UNAVAILABLE
    # Our CA, but a name that is no workload of the platform: authenticated, never authorized.
    async with users.channel(identity="intruder") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await users_pb2_grpc.UserServiceStub(channel).ListUsers(
                users_pb2.ListUsersRequest(), timeout=10
            )
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        info = error_info(caught.value)
        assert info is not None and info.reason == "UNKNOWN_IDENTITY"


PASSWORD = "correct horse battery"


async def sign_up_and_log_in(users: ServiceProcess) -> tuple[users_pb2.User, str]:
    """A new shopper, signed up and logged in through the storefront: (user, user token)."""
    async with users.channel(identity="storefront") as channel:
        stub = users_pb2_grpc.UserServiceStub(channel)
        email = f"zt.{uuid.uuid4().hex[:8]}@example.com"
        user = await stub.CreateUser(
            users_pb2.CreateUserRequest(user=users_pb2.User(email=email), password=PASSWORD)
        )
        login = await stub.AuthenticateUser(
            users_pb2.AuthenticateUserRequest(email=email, password=PASSWORD)
        )
    assert login.access_token and login.HasField("access_token_expire_time")
    return user, login.access_token


async def test_releasing_an_orders_redemption_directly_is_refused_for_all_but_orders(
    platform: Platform,
) -> None:
    """The exploit of issue 13: order with a once-per-user code, then Release its redemption so
    the slot comes back while the order keeps its discount."""
    services = platform.services
    eur = common_pb2.Money(currency_code="EUR", amount_minor=5000)
    user, token = await sign_up_and_log_in(services["users"])
    async with (
        services["promocodes"].channel(identity="back-office") as staff_channel,
        services["orders"].channel(identity="storefront", user_token=token) as shop_channel,
    ):
        staff = promo_codes_pb2_grpc.PromoCodeServiceStub(staff_channel)
        code = await staff.CreatePromoCode(
            promo_codes_pb2.CreatePromoCodeRequest(
                promo_code=promo_codes_pb2.PromoCode(
                    code=f"ONCE{uuid.uuid4().hex[:6]}".upper(),
                    fixed_amount=common_pb2.Money(currency_code="EUR", amount_minor=500),
                    max_uses_per_user=1,
                )
            )
        )
        order = await orders_pb2_grpc.OrderServiceStub(shop_channel).CreateOrder(
            orders_pb2.CreateOrderRequest(
                user_id=user.id, amount=eur, promo_code=code.code, idempotency_key="zt-1"
            )
        )
        assert order.status == orders_pb2.ORDER_STATUS_CONFIRMED
        for workload in Workload:
            if workload is W.ORDERS:
                continue
            async with services["promocodes"].channel(identity=workload.value) as channel:
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await promo_codes_pb2_grpc.PromoCodeServiceStub(channel).ReleasePromoCode(
                        promo_codes_pb2.ReleasePromoCodeRequest(
                            redemption_id=order.id, reason="exploit"
                        ),
                        timeout=10,
                    )
                assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED, workload
        usages = await staff.ListPromoCodeUsages(
            promo_codes_pb2.ListPromoCodeUsagesRequest(promo_code_id=code.id)
        )
        assert [(u.id, u.status) for u in usages.promo_code_usages] == [
            (order.id, promo_codes_pb2.PROMO_CODE_USAGE_STATUS_ACTIVE)
        ]


async def test_a_certificate_rotated_on_disk_is_used_without_a_restart(
    stack: Stack, tmp_path: Path, mongo_db_name: str
) -> None:
    """The service's files are replaced by a certificate of a new CA, with the new CA as its
    bundle: the next handshakes use them (a client of the new CA gets in, one of the old CA no
    longer does), and the process is the same one."""
    old, new = stack.pki, DevPki(tmp_path / "new-ca")
    mounted = TlsPaths(tmp_path / "tls.crt", tmp_path / "tls.key", tmp_path / "ca.crt")

    def mount(pki: DevPki) -> None:
        issued = pki.files("users")
        for source, target in zip(
            (issued.cert, issued.key, issued.ca),
            (mounted.cert, mounted.key, mounted.ca),
            strict=True,
        ):
            staged = target.with_suffix(".new")
            shutil.copyfile(source, staged)
            staged.replace(target)  # the atomic swap a secret volume does

    mount(old)
    users = stack.service(
        "users-rotate",
        [sys.executable, "-m", "users_service"],
        free_port(),
        {
            **COMMON,
            "MONGODB_DB_NAME": mongo_db_name,
            "GRPC_TLS_CERT_FILE": str(mounted.cert),
            "GRPC_TLS_KEY_FILE": str(mounted.key),
            "GRPC_TLS_CA_FILE": str(mounted.ca),
        },
    )
    users.start_and_wait()
    try:
        assert users.child is not None
        pid = users.child.pid
        async with secure_channel(users.address, new.files("operator")) as channel:
            assert await _health_code(channel) == grpc.StatusCode.UNAVAILABLE

        mount(new)
        deadline = time.monotonic() + 20
        while True:  # the first handshake after the swap reloads; no fixed wait needed
            async with secure_channel(users.address, new.files("operator")) as channel:
                code = await _health_code(channel)
            if code == grpc.StatusCode.OK or time.monotonic() > deadline:
                break
        assert code == grpc.StatusCode.OK
        async with secure_channel(users.address, old.files("operator")) as channel:
            assert await _health_code(channel) == grpc.StatusCode.UNAVAILABLE
        assert users.child.pid == pid and users.running
    finally:
        users.terminate()


def test_a_mongodb_uri_is_logged_without_its_password(stack: Stack, mongo_db_name: str) -> None:
    """The service waits for a MongoDB that is not there, and says so, without the password
    (the pytest plugin also searches every log of the run for it: SECRETS_USED)."""
    password = "s3cret-mongo-PW"
    users = stack.service(
        "users-secret",
        [sys.executable, "-m", "users_service"],
        free_port(),
        {
            **COMMON,
            "MONGODB_URI": f"mongodb://promo:{password}@127.0.0.1:{free_port()}/?authSource=admin",
            "MONGODB_DB_NAME": mongo_db_name,
            "MONGODB_TIMEOUT_MS": "200",
        },
    )
    users.start()
    try:
        deadline = time.monotonic() + 30
        while "waiting for MongoDB" not in users.log_tail(200):
            assert time.monotonic() < deadline, users.log_tail(40)
            time.sleep(0.1)
        log = users.log_path.read_text()
        assert "mongodb://promo:***@127.0.0.1:" in log
        assert password not in log
    finally:
        users.kill()


async def test_health_alone_is_served_in_plaintext_on_its_own_port(
    stack: Stack, mongo_db_name: str
) -> None:
    health_port = free_port()
    users = stack.service(
        "users-probe",
        [sys.executable, "-m", "users_service"],
        free_port(),
        {**COMMON, "MONGODB_DB_NAME": mongo_db_name, "GRPC_HEALTH_PORT": str(health_port)},
    )
    users.start_and_wait()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{health_port}") as probe:
            assert await _health_code(probe) == grpc.StatusCode.OK
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await users_pb2_grpc.UserServiceStub(probe).ListUsers(
                    users_pb2.ListUsersRequest(), timeout=10
                )
            assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
            stream = reflection_pb2_grpc.ServerReflectionStub(probe).ServerReflectionInfo(
                timeout=10
            )
            assert await stream.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        users.terminate()


def _reason(error: grpc.aio.AioRpcError) -> tuple[grpc.StatusCode, str]:
    info = error_info(error)
    return error.code(), info.reason if info else ""


async def test_one_users_token_cannot_read_or_act_for_another(platform: Platform) -> None:
    services = platform.services
    ada, ada_token = await sign_up_and_log_in(services["users"])
    bob, bob_token = await sign_up_and_log_in(services["users"])
    eur = common_pb2.Money(currency_code="EUR", amount_minor=1000)
    not_this_user = (grpc.StatusCode.PERMISSION_DENIED, "NOT_THIS_USER")
    async with (
        services["users"].channel(identity="storefront", user_token=ada_token) as users_channel,
        services["orders"].channel(identity="storefront", user_token=ada_token) as ada_orders,
        services["orders"].channel(identity="storefront", user_token=bob_token) as bob_orders,
        services["promocodes"].channel(identity="storefront", user_token=ada_token) as codes,
        services["users"].channel(identity="storefront") as no_token,
        services["users"].channel(identity="storefront", user_token="not.a.jwt") as forged,
    ):
        users = users_pb2_grpc.UserServiceStub(users_channel)
        assert (await users.GetUser(users_pb2.GetUserRequest(id=ada.id))).id == ada.id
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await users.GetUser(users_pb2.GetUserRequest(id=bob.id))
        assert _reason(caught.value) == not_this_user
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await users.UpdateUser(
                users_pb2.UpdateUserRequest(
                    user=users_pb2.User(id=bob.id, display_name="Mallory"),
                    update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
                )
            )
        assert _reason(caught.value) == not_this_user
        # Ordering, reading and cancelling for another user.
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await orders_pb2_grpc.OrderServiceStub(ada_orders).CreateOrder(
                orders_pb2.CreateOrderRequest(user_id=bob.id, amount=eur, idempotency_key="x1")
            )
        assert _reason(caught.value) == not_this_user
        bobs = await orders_pb2_grpc.OrderServiceStub(bob_orders).CreateOrder(
            orders_pb2.CreateOrderRequest(user_id=bob.id, amount=eur, idempotency_key="b1")
        )
        for call in (
            lambda stub: stub.GetOrder(orders_pb2.GetOrderRequest(id=bobs.id)),
            lambda stub: stub.CancelOrder(orders_pb2.CancelOrderRequest(id=bobs.id, reason="x")),
            lambda stub: stub.ListOrders(orders_pb2.ListOrdersRequest(user_id=bob.id)),
            lambda stub: stub.ListOrders(orders_pb2.ListOrdersRequest()),  # everyone's
        ):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call(orders_pb2_grpc.OrderServiceStub(ada_orders))
            assert _reason(caught.value) == not_this_user
        mine = await orders_pb2_grpc.OrderServiceStub(ada_orders).ListOrders(
            orders_pb2.ListOrdersRequest(user_id=ada.id)
        )
        assert list(mine.orders) == []
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await promo_codes_pb2_grpc.PromoCodeServiceStub(codes).ValidatePromoCode(
                promo_codes_pb2.ValidatePromoCodeRequest(
                    code="ANY", user_id=bob.id, order_amount=eur
                )
            )
        assert _reason(caught.value) == not_this_user
        # No token, or one that does not verify: not even the user's own data.
        for channel in (no_token, forged):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await users_pb2_grpc.UserServiceStub(channel).GetUser(
                    users_pb2.GetUserRequest(id=ada.id)
                )
            assert _reason(caught.value) == (
                grpc.StatusCode.UNAUTHENTICATED,
                "INVALID_USER_TOKEN",
            )
    async with services["orders"].channel() as staff:  # the back office reaches every user
        fetched = await orders_pb2_grpc.OrderServiceStub(staff).GetOrder(
            orders_pb2.GetOrderRequest(id=bobs.id)
        )
        assert fetched.status == orders_pb2.ORDER_STATUS_CONFIRMED


async def test_a_user_changes_their_password_only_with_the_current_one(
    platform: Platform,
) -> None:
    users_service = platform.services["users"]
    ada, token = await sign_up_and_log_in(users_service)
    change = users_pb2.UpdateUserRequest(
        user=users_pb2.User(id=ada.id),
        update_mask=field_mask_pb2.FieldMask(paths=["password"]),
        password="a brand new secret",
    )
    async with users_service.channel(identity="storefront", user_token=token) as channel:
        stub = users_pb2_grpc.UserServiceStub(channel)
        for wrong in ("", "not her password"):
            change.current_password = wrong
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.UpdateUser(change)
            assert _reason(caught.value) == (
                grpc.StatusCode.UNAUTHENTICATED,
                "INVALID_CREDENTIALS",
            )
        reactivate = users_pb2.UpdateUserRequest(
            user=users_pb2.User(id=ada.id, active=True),
            update_mask=field_mask_pb2.FieldMask(paths=["active"]),
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.UpdateUser(reactivate)
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        change.current_password = PASSWORD
        await stub.UpdateUser(change)
    async with users_service.channel(identity="storefront") as login:
        stub = users_pb2_grpc.UserServiceStub(login)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.AuthenticateUser(
                users_pb2.AuthenticateUserRequest(email=ada.email, password=PASSWORD)
            )
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        again = await stub.AuthenticateUser(
            users_pb2.AuthenticateUserRequest(email=ada.email, password="a brand new secret")
        )
        assert again.user.id == ada.id
