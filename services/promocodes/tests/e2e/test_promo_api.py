"""The catalogue and redemption API over gRPC, and UserService being down."""

from __future__ import annotations

import time
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc

from devstack.ports import free_port
from devstack.stack import Stack
from promo.v1 import promo_codes_pb2, promo_codes_pb2_grpc, users_pb2_grpc

from .conftest import (
    assert_counters_match_usages,
    create_users,
    eur,
    promocodes_process,
    reason,
    refused,
)

pytestmark = pytest.mark.e2e

pb = promo_codes_pb2
Stub = promo_codes_pb2_grpc.PromoCodeServiceStub


async def test_catalogue_round_trip(promo: Stub) -> None:
    start = Timestamp(seconds=1_900_000_000)
    created = await promo.CreatePromoCode(
        pb.CreatePromoCodeRequest(
            promo_code=pb.PromoCode(
                code="spring-sale", description="spring",
                percentage=pb.PercentageDiscount(basis_points=1500, max_discount=eur(900)),
                valid_from=start, min_order_amount=eur(2000), max_uses=10, budget=eur(5000),
                active=False, uses=77,  # ignored on creation
            )
        )
    )  # fmt: skip
    assert (created.code, created.active, created.uses, created.max_uses) == (
        "SPRING-SALE", True, 0, 10,
    )  # fmt: skip
    assert created.discount_granted == eur(0) and created.create_time == created.update_time
    assert await promo.GetPromoCode(pb.GetPromoCodeRequest(id=created.id)) == created
    assert await promo.LookupPromoCode(pb.LookupPromoCodeRequest(code="Spring-Sale")) == created
    error = await refused(promo.CreatePromoCode(pb.CreatePromoCodeRequest(promo_code=pb.PromoCode(
        code="SPRING-sale", percentage=pb.PercentageDiscount(basis_points=1)))))  # fmt: skip
    assert (error.code(), reason(error)) == (
        grpc.StatusCode.ALREADY_EXISTS, "PROMO_CODE_ALREADY_EXISTS",
    )  # fmt: skip
    updated = await promo.UpdatePromoCode(
        pb.UpdatePromoCodeRequest(
            promo_code=pb.PromoCode(id=created.id, description="later", max_uses=20),
            update_mask=field_mask_pb2.FieldMask(paths=["description", "max_uses", "valid_from"]),
        )
    )
    assert (updated.description, updated.max_uses, updated.HasField("valid_from")) == (
        "later", 20, False,
    )  # fmt: skip
    listed = await promo.ListPromoCodes(
        pb.ListPromoCodesRequest(code_prefix="spring", active=True, valid_at=start)
    )
    assert [c.id for c in listed.promo_codes] == [created.id]
    deleted = await promo.DeletePromoCode(pb.DeletePromoCodeRequest(id=created.id))
    assert not deleted.active
    assert await promo.DeletePromoCode(pb.DeletePromoCodeRequest(id=created.id)) == deleted
    missing = await refused(promo.GetPromoCode(pb.GetPromoCodeRequest(id="000000000000")))
    assert (missing.code(), reason(missing)) == (grpc.StatusCode.NOT_FOUND, "PROMO_CODE_NOT_FOUND")


async def test_generate_ten_thousand_codes_fast_and_unique(promo: Stub, promo_db: Any) -> None:
    started = time.perf_counter()
    batch = await promo.GeneratePromoCodes(
        pb.GeneratePromoCodesRequest(
            prefix="bulk-", count=10_000, template=pb.PromoCode(fixed_amount=eur(500), max_uses=1)
        ),
        timeout=120,
    )
    elapsed = time.perf_counter() - started
    assert len(batch.codes) == len(set(batch.codes)) == 10_000
    # The default random part: 12 characters, long enough that guessing one is impractical
    # (services/promocodes/README.md has the odds).
    assert all(c.startswith("BULK-") and len(c) == len("BULK-") + 12 for c in batch.codes)
    assert promo_db.promo_codes.count_documents({"batch_id": batch.batch_id}) == 10_000
    assert elapsed < 60, elapsed
    page = await promo.ListPromoCodes(
        pb.ListPromoCodesRequest(batch_id=batch.batch_id, page_size=3)
    )
    assert [c.code for c in page.promo_codes] == sorted(batch.codes)[:3]
    print(f"generated 10000 codes in {elapsed:.2f}s")


async def test_release_then_redeem_again_at_the_per_user_limit(
    promo: Stub, saga: Stub, users: users_pb2_grpc.UserServiceStub, promo_db: Any
) -> None:
    (user_id,) = await create_users(users, 1, "release")
    created = await promo.CreatePromoCode(
        pb.CreatePromoCodeRequest(
            promo_code=pb.PromoCode(code="AGAIN", fixed_amount=eur(300), max_uses_per_user=1)
        )
    )

    def redeem(rid: str) -> Any:
        return saga.RedeemPromoCode(
            pb.RedeemPromoCodeRequest(
                code="again", user_id=user_id, order_amount=eur(1000), redemption_id=rid
            )
        )

    first = await redeem("rel-1")
    limit = await refused(redeem("rel-2"))
    assert reason(limit) == "PER_USER_LIMIT_REACHED"
    quote = await promo.ValidatePromoCode(
        pb.ValidatePromoCodeRequest(code="AGAIN", user_id=user_id, order_amount=eur(1000))
    )
    assert (quote.applicable, quote.reason) == (False, "PER_USER_LIMIT_REACHED")
    released = await saga.ReleasePromoCode(
        pb.ReleasePromoCodeRequest(redemption_id="rel-1", reason="cancelled")
    )
    assert released.status == pb.PROMO_CODE_USAGE_STATUS_RELEASED
    assert released.HasField("release_time") and released.create_time == first.create_time
    again = await saga.ReleasePromoCode(pb.ReleasePromoCodeRequest(redemption_id="rel-1"))
    assert again == released
    second = await redeem("rel-2")
    assert second.discount == eur(300)
    listed = await promo.ListPromoCodeUsages(
        pb.ListPromoCodeUsagesRequest(promo_code_id=created.id)
    )
    assert [(u.id, u.status) for u in listed.promo_code_usages] == [
        ("rel-1", pb.PROMO_CODE_USAGE_STATUS_RELEASED),
        ("rel-2", pb.PROMO_CODE_USAGE_STATUS_ACTIVE),
    ]
    conflict = await refused(
        saga.RedeemPromoCode(
            pb.RedeemPromoCodeRequest(
                code="AGAIN", user_id=user_id, order_amount=eur(999), redemption_id="rel-2"
            )
        )
    )
    assert (conflict.code(), reason(conflict)) == (
        grpc.StatusCode.ALREADY_EXISTS, "REDEMPTION_CONFLICT",
    )  # fmt: skip
    unknown = await refused(saga.ReleasePromoCode(pb.ReleasePromoCodeRequest(redemption_id="x")))
    assert (unknown.code(), reason(unknown)) == (
        grpc.StatusCode.NOT_FOUND, "REDEMPTION_NOT_FOUND",
    )  # fmt: skip
    code = assert_counters_match_usages(promo_db, created.id)
    assert code["uses"] == 1


async def test_users_down_gives_unavailable_and_writes_nothing(
    stack: Stack, mongo_db_name: str, mongo_client: Any
) -> None:
    dead = f"127.0.0.1:{free_port()}"
    service = promocodes_process(stack, mongo_db_name, dead, {"USERS_TIMEOUT_SECONDS": "0.5"})
    service.start()
    try:
        service.wait_status("NOT_SERVING", timeout=30)  # health tells the users dependency is down
        async with service.channel() as channel:
            stub = promo_codes_pb2_grpc.PromoCodeServiceStub(channel)
            health = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="users")
            )
            assert health.status == health_pb2.HealthCheckResponse.NOT_SERVING
            # Still ready: its own MongoDB answers, and the catalogue keeps working.
            ready = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="readiness")
            )
            assert ready.status == health_pb2.HealthCheckResponse.SERVING
            created = await stub.CreatePromoCode(
                pb.CreatePromoCodeRequest(
                    promo_code=pb.PromoCode(code="DOWN", fixed_amount=eur(100), max_uses=1)
                )
            )
            async with service.channel(identity="orders") as saga_channel:
                saga = promo_codes_pb2_grpc.PromoCodeServiceStub(saga_channel)
                error = await refused(
                    saga.RedeemPromoCode(
                        pb.RedeemPromoCodeRequest(
                            code="DOWN",
                            user_id="abc123",
                            order_amount=eur(1000),
                            redemption_id="d1",
                        )
                    )
                )
            assert (error.code(), reason(error)) == (
                grpc.StatusCode.UNAVAILABLE, "DEPENDENCY_UNAVAILABLE",
            )  # fmt: skip
            after = await stub.GetPromoCode(pb.GetPromoCodeRequest(id=created.id))
            assert after.uses == 0
        db = mongo_client[mongo_db_name]
        assert await db.promo_code_usages.count_documents({}) == 0
        stored = await db.promo_codes.find_one({"_id": created.id})
        assert stored["pending"] == {} and stored["redeemed_total"] == 0
    finally:
        service.terminate()
