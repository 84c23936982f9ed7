"""I5 over the wire: every field of every request with bad values gets INVALID_ARGUMENT naming
the field (or the documented status and reason), never INTERNAL, and nothing is written."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2
from google.protobuf.timestamp_pb2 import Timestamp

from promo.v1 import common_pb2, promo_codes_pb2, promo_codes_pb2_grpc
from promo_libs.grpc.errors import bad_request

from .conftest import reason

pytestmark = pytest.mark.e2e

pb = promo_codes_pb2


def money(currency: str = "EUR", amount: int = 100) -> common_pb2.Money:
    return common_pb2.Money(currency_code=currency, amount_minor=amount)


GOOD = pb.PromoCode(code="GOOD-1", percentage=pb.PercentageDiscount(basis_points=100))
BAD_TIME = Timestamp(seconds=253_402_300_800)  # after 9999-12-31
CODE_BAD = {
    "code": pb.PromoCode(code="no spaces", fixed_amount=money()),
    "description": pb.PromoCode(code="ABC", fixed_amount=money(), description="d" * 1001),
    "percentage": pb.PromoCode(code="ABC"),
    "percentage.basis_points": pb.PromoCode(
        code="ABC", percentage=pb.PercentageDiscount(basis_points=0)
    ),
    "percentage.max_discount.amount_minor": pb.PromoCode(
        code="ABC", percentage=pb.PercentageDiscount(basis_points=10, max_discount=money(amount=0))
    ),
    "percentage.max_discount.currency_code": pb.PromoCode(
        code="ABC", percentage=pb.PercentageDiscount(basis_points=10, max_discount=money("euro"))
    ),
    "fixed_amount.amount_minor": pb.PromoCode(code="ABC", fixed_amount=money(amount=0)),
    "fixed_amount.currency_code": pb.PromoCode(code="ABC", fixed_amount=money("")),
    "valid_from": pb.PromoCode(code="ABC", fixed_amount=money(), valid_from=BAD_TIME),
    "valid_until": pb.PromoCode(
        code="ABC",
        fixed_amount=money(),
        valid_from=Timestamp(seconds=10),
        valid_until=Timestamp(seconds=5),
    ),
    "min_order_amount.amount_minor": pb.PromoCode(
        code="ABC", fixed_amount=money(), min_order_amount=money(amount=-1)
    ),
    "max_uses": pb.PromoCode(code="ABC", fixed_amount=money(), max_uses=0),
    "max_uses_per_user": pb.PromoCode(code="ABC", fixed_amount=money(), max_uses_per_user=-1),
    "budget.amount_minor": pb.PromoCode(code="ABC", fixed_amount=money(), budget=money(amount=0)),
    "eligible_user_ids[0]": pb.PromoCode(
        code="ABC", fixed_amount=money(), eligible_user_ids=["a b"]
    ),
}
ORDER = money("EUR", 1000)

CASES: list[tuple[str, str, Any, set[str]]] = [
    *[
        ("CreatePromoCode", f, pb.CreatePromoCodeRequest(promo_code=m), {f"promo_code.{f}"})
        for f, m in CODE_BAD.items()
    ],
    *[
        (
            "GeneratePromoCodes",
            f,
            pb.GeneratePromoCodesRequest(count=1, template=m),
            {f"template.{f}"},
        )
        for f, m in CODE_BAD.items()
        if f != "code"
    ],
    (
        "GeneratePromoCodes",
        "count",
        pb.GeneratePromoCodesRequest(count=10_001, template=GOOD),
        {"count"},
    ),
    (
        "GeneratePromoCodes",
        "prefix",
        pb.GeneratePromoCodesRequest(prefix="a.b", count=1, template=GOOD),
        {"prefix"},
    ),
    (
        "GeneratePromoCodes",
        "random_length",
        pb.GeneratePromoCodesRequest(count=1, random_length=3, template=GOOD),
        {"random_length"},
    ),
    ("GetPromoCode", "id", pb.GetPromoCodeRequest(id=""), {"id"}),
    ("GetPromoCode", "id", pb.GetPromoCodeRequest(id="../x"), {"id"}),
    ("LookupPromoCode", "code", pb.LookupPromoCodeRequest(code="x"), {"code"}),
    ("DeletePromoCode", "id", pb.DeletePromoCodeRequest(id="$x"), {"id"}),
    ("ListPromoCodes", "page_size", pb.ListPromoCodesRequest(page_size=-1), {"page_size"}),
    (
        "ListPromoCodes",
        "page_token",
        pb.ListPromoCodesRequest(page_token="garbage!"),
        {"page_token"},
    ),
    ("ListPromoCodes", "code_prefix", pb.ListPromoCodesRequest(code_prefix="a b"), {"code_prefix"}),
    ("ListPromoCodes", "batch_id", pb.ListPromoCodesRequest(batch_id="a-b"), {"batch_id"}),
    ("ListPromoCodes", "valid_at", pb.ListPromoCodesRequest(valid_at=BAD_TIME), {"valid_at"}),
    (
        "UpdatePromoCode",
        "update_mask",
        pb.UpdatePromoCodeRequest(promo_code=pb.PromoCode(id="abc")),
        {"update_mask"},
    ),
    (
        "UpdatePromoCode",
        "update_mask",
        pb.UpdatePromoCodeRequest(
            promo_code=pb.PromoCode(id="abc"),
            update_mask=field_mask_pb2.FieldMask(paths=["code", "nope"]),
        ),
        {"update_mask"},
    ),
    (
        "UpdatePromoCode",
        "promo_code.id",
        pb.UpdatePromoCodeRequest(
            promo_code=pb.PromoCode(id=""),
            update_mask=field_mask_pb2.FieldMask(paths=["description"]),
        ),
        {"promo_code.id"},
    ),
    (
        "ValidatePromoCode",
        "code",
        pb.ValidatePromoCodeRequest(code="", user_id="u1", order_amount=ORDER),
        {"code"},
    ),
    (
        "ValidatePromoCode",
        "user_id",
        pb.ValidatePromoCodeRequest(code="ABC", user_id="u 1", order_amount=ORDER),
        {"user_id"},
    ),
    (
        "ValidatePromoCode",
        "order_amount",
        pb.ValidatePromoCodeRequest(code="ABC", user_id="u1"),
        {"order_amount"},
    ),
    (
        "ValidatePromoCode",
        "order_amount",
        pb.ValidatePromoCodeRequest(code="ABC", user_id="u1", order_amount=money("eur", 0)),
        {"order_amount.currency_code", "order_amount.amount_minor"},
    ),
    (
        "ValidatePromoCode",
        "order_amount",
        pb.ValidatePromoCodeRequest(code="ABC", user_id="u1", order_amount=money("ABC", 100)),
        {"order_amount.currency_code"},
    ),
    (
        "CreatePromoCode",
        "budget.currency_code",
        pb.CreatePromoCodeRequest(
            promo_code=pb.PromoCode(code="ABC", fixed_amount=money(), budget=money("XTS", 100))
        ),
        {"promo_code.budget.currency_code"},
    ),
    (
        "RedeemPromoCode",
        "all",
        pb.RedeemPromoCodeRequest(),
        {"code", "user_id", "order_amount", "redemption_id"},
    ),
    (
        "RedeemPromoCode",
        "redemption_id",
        pb.RedeemPromoCodeRequest(
            code="ABC", user_id="u1", order_amount=ORDER, redemption_id="a.b"
        ),
        {"redemption_id"},
    ),
    (
        "RedeemPromoCode",
        "order_amount",
        pb.RedeemPromoCodeRequest(
            code="ABC", user_id="u1", order_amount=money(amount=10**13), redemption_id="r1"
        ),
        {"order_amount.amount_minor"},
    ),
    (
        "ReleasePromoCode",
        "all",
        pb.ReleasePromoCodeRequest(redemption_id="", reason="r" * 501),
        {"redemption_id", "reason"},
    ),
    (
        "ListPromoCodeUsages",
        "page_size",
        pb.ListPromoCodeUsagesRequest(page_size=-5),
        {"page_size"},
    ),
    ("ListPromoCodeUsages", "status", pb.ListPromoCodeUsagesRequest(status=9), {"status"}),  # type: ignore[arg-type]
    (
        "ListPromoCodeUsages",
        "ids",
        pb.ListPromoCodeUsagesRequest(promo_code_id="a b", user_id="c.d"),
        {"promo_code_id", "user_id"},
    ),
]


@pytest.mark.parametrize(("method", "label", "request_message", "fields"), CASES)
async def test_bad_values_are_named(
    promo: promo_codes_pb2_grpc.PromoCodeServiceStub,
    saga: promo_codes_pb2_grpc.PromoCodeServiceStub,
    promo_db: Any,
    method: str,
    label: str,
    request_message: Any,
    fields: set[str],
) -> None:
    before = (
        promo_db.promo_codes.count_documents({}),
        promo_db.promo_code_usages.count_documents({}),
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        caller = saga if method in ("RedeemPromoCode", "ReleasePromoCode") else promo
        await getattr(caller, method)(request_message)
    error = caught.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (error.code(), error.details())
    details = bad_request(error)
    assert details is not None
    assert {v.field for v in details.field_violations} == fields
    after = (
        promo_db.promo_codes.count_documents({}),
        promo_db.promo_code_usages.count_documents({}),
    )
    assert after == before


async def test_currency_mismatch_and_unknown_things(
    promo: promo_codes_pb2_grpc.PromoCodeServiceStub,
    saga: promo_codes_pb2_grpc.PromoCodeServiceStub,
    promo_db: Any,
) -> None:
    mixed = pb.PromoCode(code="MIX", fixed_amount=money("EUR"), budget=money("USD", 5000))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await promo.CreatePromoCode(pb.CreatePromoCodeRequest(promo_code=mixed))
    assert (caught.value.code(), reason(caught.value)) == (
        grpc.StatusCode.INVALID_ARGUMENT, "CURRENCY_MISMATCH",
    )  # fmt: skip
    quote = await promo.ValidatePromoCode(
        pb.ValidatePromoCodeRequest(code="NO-SUCH", user_id="u1", order_amount=ORDER)
    )
    assert (quote.applicable, quote.reason, quote.HasField("promo_code")) == (
        False, "PROMO_CODE_NOT_FOUND", False,
    )  # fmt: skip
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await saga.RedeemPromoCode(
            pb.RedeemPromoCodeRequest(
                code="NO-SUCH", user_id="u1", order_amount=ORDER, redemption_id="z"
            )
        )
    assert (caught.value.code(), reason(caught.value)) == (
        grpc.StatusCode.NOT_FOUND, "PROMO_CODE_NOT_FOUND",
    )  # fmt: skip
    assert promo_db.promo_codes.count_documents({"code": "MIX"}) == 0


async def test_a_thousand_bad_ids_are_invalid_argument_with_a_capped_list(
    promo: promo_codes_pb2_grpc.PromoCodeServiceStub, promo_db: Any
) -> None:
    # Every id is its own violation: listing all of them made trailers beyond gRPC's metadata
    # limit, and the client got RESOURCE_EXHAUSTED instead of INVALID_ARGUMENT.
    many = pb.PromoCode(
        code="MANY-BAD",
        fixed_amount=money(),
        eligible_user_ids=[f"bad id {n}" for n in range(1000)],
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await promo.CreatePromoCode(pb.CreatePromoCodeRequest(promo_code=many))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    violations = bad_request(caught.value)
    assert violations is not None
    listed = [v.field for v in violations.field_violations]
    assert 0 < len(listed) < 1000
    assert listed[0] == "promo_code.eligible_user_ids[0]"
    assert f"{1000 - len(listed)} more" in (caught.value.details() or "")
    assert promo_db.promo_codes.count_documents({"code": "MANY-BAD"}) == 0


async def test_the_largest_legitimate_request_passes_and_a_bigger_one_is_refused(
    promo: promo_codes_pb2_grpc.PromoCodeServiceStub, promo_db: Any
) -> None:
    ids = [f"{n:064d}" for n in range(1000)]  # 1000 ids of the longest allowed length
    largest = pb.PromoCode(
        code="LARGEST", fixed_amount=money(), description="d" * 1000, eligible_user_ids=ids
    )
    created = await promo.CreatePromoCode(pb.CreatePromoCodeRequest(promo_code=largest))
    assert len(created.eligible_user_ids) == 1000
    before = promo_db.promo_codes.count_documents({})
    # The largest legitimate cart: 1000 lines of 64-character skus and products, 3 categories.
    lines = [
        common_pb2.LineItem(
            sku=f"{n:064d}", product_id=f"{n:064d}", category_ids=[f"{c:064d}" for c in range(3)],
            quantity=1, unit_price=money(),
        )
        for n in range(1000)
    ]  # fmt: skip
    quote = await promo.ValidatePromoCode(
        pb.ValidatePromoCodeRequest(code="LARGEST", user_id="u1", lines=lines)
    )
    assert len(quote.line_discounts) == 1000
    huge = pb.PromoCode(code="HUGE", fixed_amount=money(), eligible_user_ids=ids * 20)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await promo.CreatePromoCode(pb.CreatePromoCodeRequest(promo_code=huge))
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, caught.value.details()
    # Within the limit but more ids than allowed: refused by count, not by converting each.
    many = pb.PromoCode(code="MANY", fixed_amount=money(), eligible_user_ids=["u"] * 50_000)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await promo.CreatePromoCode(pb.CreatePromoCodeRequest(promo_code=many))
    violations = bad_request(caught.value)
    assert violations is not None
    assert [v.field for v in violations.field_violations] == ["promo_code.eligible_user_ids"]
    assert promo_db.promo_codes.count_documents({}) == before
