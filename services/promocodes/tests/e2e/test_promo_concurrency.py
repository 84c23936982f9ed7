"""I1 and I2 over the wire: limits hold and retries change nothing, under real concurrency."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from typing import Any

import grpc
import pytest

from promo.v1 import common_pb2, promo_codes_pb2, promo_codes_pb2_grpc, users_pb2_grpc

from .conftest import assert_counters_match_usages, create_users, reason

pytestmark = pytest.mark.e2e

Stub = promo_codes_pb2_grpc.PromoCodeServiceStub


def eur(amount: int) -> common_pb2.Money:
    return common_pb2.Money(currency_code="EUR", amount_minor=amount)


@pytest.fixture(scope="module")
def user_ids() -> list[str]:
    return []


async def two_hundred_users(users: users_pb2_grpc.UserServiceStub, cache: list[str]) -> list[str]:
    if not cache:
        cache.extend(await create_users(users, 200, "load"))
    return cache


async def redeem_all(
    saga: Stub, code: str, calls: list[tuple[str, int, str]]
) -> list[promo_codes_pb2.PromoCodeUsage | grpc.aio.AioRpcError]:
    async def one(user_id: str, amount: int, rid: str) -> Any:
        try:
            return await saga.RedeemPromoCode(
                promo_codes_pb2.RedeemPromoCodeRequest(
                    code=code, user_id=user_id, order_amount=eur(amount), redemption_id=rid
                ),
                timeout=60,
            )
        except grpc.aio.AioRpcError as exc:
            return exc

    return list(await asyncio.gather(*(one(*c) for c in calls)))


async def test_thousand_concurrent_redemptions_grant_exactly_max_uses(
    promo: Stub,
    saga: Stub,
    users: users_pb2_grpc.UserServiceStub,
    user_ids: list[str],
    promo_db: Any,
) -> None:
    ids = await two_hundred_users(users, user_ids)
    created = await promo.CreatePromoCode(
        promo_codes_pb2.CreatePromoCodeRequest(
            promo_code=promo_codes_pb2.PromoCode(
                code="LOAD-100", fixed_amount=eur(100), max_uses=100, max_uses_per_user=2
            )
        )
    )
    calls = [(ids[i % 200], 1000, f"load100-{i}") for i in range(1000)]
    random.shuffle(calls)
    outcomes = await redeem_all(saga, "load-100", calls)
    granted = [o for o in outcomes if isinstance(o, promo_codes_pb2.PromoCodeUsage)]
    refused = Counter(
        (o.code(), reason(o)) for o in outcomes if isinstance(o, grpc.aio.AioRpcError)
    )
    assert len(granted) == 100, refused
    assert max(Counter(u.user_id for u in granted).values()) <= 2
    assert set(refused) <= {
        (grpc.StatusCode.FAILED_PRECONDITION, "PROMO_CODE_EXHAUSTED"),
        (grpc.StatusCode.FAILED_PRECONDITION, "PER_USER_LIMIT_REACHED"),
    }
    code = assert_counters_match_usages(promo_db, created.id)
    assert code["uses"] == 100 and code["discount_granted"] == 100 * 100


async def test_budget_binds_under_concurrency(
    promo: Stub,
    saga: Stub,
    users: users_pb2_grpc.UserServiceStub,
    user_ids: list[str],
    promo_db: Any,
) -> None:
    ids = await two_hundred_users(users, user_ids)
    budget = 123_457
    created = await promo.CreatePromoCode(
        promo_codes_pb2.CreatePromoCodeRequest(
            promo_code=promo_codes_pb2.PromoCode(
                code="LOAD-BUDGET",
                percentage=promo_codes_pb2.PercentageDiscount(
                    basis_points=1250, max_discount=eur(2_000)
                ),
                max_uses_per_user=2,
                budget=eur(budget),
            )
        )
    )
    rng = random.Random(7)
    calls = [(ids[i % 200], rng.randint(1, 20_000), f"budget-{i}") for i in range(1000)]
    outcomes = await redeem_all(saga, "LOAD-BUDGET", calls)
    granted = [o for o in outcomes if isinstance(o, promo_codes_pb2.PromoCodeUsage)]
    for usage in granted:  # exact arithmetic: floor(12.5 %), capped at 20.00
        expected = min(usage.order_amount.amount_minor * 1250 // 10000, 2_000)
        assert usage.discount.amount_minor == expected
    total = sum(u.discount.amount_minor for u in granted)
    reasons = Counter(reason(o) for o in outcomes if isinstance(o, grpc.aio.AioRpcError))
    assert total <= budget and reasons["BUDGET_EXHAUSTED"] > 0, reasons
    assert set(reasons) <= {"BUDGET_EXHAUSTED", "PER_USER_LIMIT_REACHED"}
    code = assert_counters_match_usages(promo_db, created.id)
    assert code["discount_granted"] == total


async def test_same_redemption_id_twenty_times_concurrently(
    promo: Stub,
    saga: Stub,
    users: users_pb2_grpc.UserServiceStub,
    user_ids: list[str],
    promo_db: Any,
) -> None:
    ids = await two_hundred_users(users, user_ids)
    created = await promo.CreatePromoCode(
        promo_codes_pb2.CreatePromoCodeRequest(
            promo_code=promo_codes_pb2.PromoCode(
                code="TWENTY", fixed_amount=eur(700), max_uses=5, max_uses_per_user=1
            )
        )
    )
    outcomes = await redeem_all(saga, "twenty", [(ids[0], 5000, "order-20x")] * 20)
    assert all(isinstance(o, promo_codes_pb2.PromoCodeUsage) for o in outcomes), outcomes
    assert all(o == outcomes[0] for o in outcomes)
    assert promo_db.promo_code_usages.count_documents({"_id": "order-20x"}) == 1
    code = assert_counters_match_usages(promo_db, created.id)
    assert code["uses"] == 1
