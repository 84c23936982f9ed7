"""How often PromoCodeService may be called (promo_libs.rate_limit; DESIGN.md I7).

Guessing codes goes through Validate and Lookup (NOT_FOUND or not): buckets per shopper (the
request's user, or the user token's for Lookup) and for the storefront as a whole. A popular
code is validated by many shoppers at once, so its own bucket is wide: it stops one code being
hammered, not a campaign. Redeem comes from the order saga only; a bucket per user caps how fast
one account can burn codes.

While Redis is down, all three let calls through (logged): checkout must keep working, generated
codes are too long to guess at any rate the servers can answer (promocodes README), Redeem comes
only from orders, and the code's limits themselves (max uses, per user, budget) are enforced in
MongoDB whatever Redis does.
"""

from __future__ import annotations

from typing import Any

from promo.v1 import promo_codes_pb2
from promo_libs.identity import current_user
from promo_libs.rate_limit import Bucket, IfStoreDown, LimitTable, MethodLimits

_SERVICE = promo_codes_pb2.DESCRIPTOR.services_by_name["PromoCodeService"].full_name


def _code(request: Any) -> str:
    return str(request.code).strip().upper()


def _user(request: Any) -> str:
    return str(request.user_id)


def _token_user(_request: Any) -> str:
    return current_user.get() or ""


LIMITS: LimitTable = {
    f"/{_SERVICE}/ValidatePromoCode": MethodLimits(
        if_store_down=IfStoreDown.LET_THROUGH,
        per_caller=(200.0, 400),
        buckets=[
            Bucket("user", _user, rate=2.0, burst=30),
            Bucket("code", _code, rate=500.0, burst=1000),
        ],
    ),
    f"/{_SERVICE}/LookupPromoCode": MethodLimits(
        if_store_down=IfStoreDown.LET_THROUGH,
        per_caller=(100.0, 200),
        buckets=[
            Bucket("user", _token_user, rate=2.0, burst=30),
            Bucket("code", _code, rate=500.0, burst=1000),
        ],
    ),
    f"/{_SERVICE}/RedeemPromoCode": MethodLimits(
        if_store_down=IfStoreDown.LET_THROUGH,
        buckets=[Bucket("redeemer", _user, rate=20.0, burst=100)],
    ),
}
