"""Who may call PromoCodeService (promo_libs.grpc.authz enforces it; DESIGN.md I7).

Deny by default: a method missing here stops the server at start-up.
"""

from __future__ import annotations

from promo.v1 import promo_codes_pb2
from promo_libs.grpc.authz import ServicePolicy, allow
from promo_libs.identity import Workload as W

POLICY = ServicePolicy(
    promo_codes_pb2.DESCRIPTOR.services_by_name["PromoCodeService"].full_name,
    {
        # The catalogue is managed from the back office only: listing it would hand out every
        # unredeemed single-use code.
        "CreatePromoCode": allow(W.BACK_OFFICE),
        # Staff only: orders fills its answer and events from Redeem's answer, which carries the
        # code's rules as redeemed.
        "GetPromoCode": allow(W.BACK_OFFICE),
        # A shopper typing a code: the storefront looks it up and validates it.
        "LookupPromoCode": allow(W.BACK_OFFICE, W.STOREFRONT),
        "ListPromoCodes": allow(W.BACK_OFFICE),
        "UpdatePromoCode": allow(W.BACK_OFFICE),
        "DeletePromoCode": allow(W.BACK_OFFICE),
        "GeneratePromoCodes": allow(W.BACK_OFFICE),
        "ValidatePromoCode": allow(W.BACK_OFFICE, W.STOREFRONT, W.ORDERS),
        # Redemption is the order saga's alone: a direct Release on an order's redemption id
        # would give the slot back while the order keeps its discount.
        "RedeemPromoCode": allow(W.ORDERS),
        "ReleasePromoCode": allow(W.ORDERS),
        "ListPromoCodeUsages": allow(W.BACK_OFFICE),
        # Campaigns are managed from the back office, like the codes they group.
        "CreateCampaign": allow(W.BACK_OFFICE),
        "GetCampaign": allow(W.BACK_OFFICE),
        "ListCampaigns": allow(W.BACK_OFFICE),
        "UpdateCampaign": allow(W.BACK_OFFICE),
    },
)
