"""Who may call AnalyticsService (promo_libs.grpc.authz enforces it; DESIGN.md I7).

Deny by default: a method missing here stops the server at start-up.
"""

from __future__ import annotations

from promo.v1 import analytics_pb2
from promo_libs.grpc.authz import ServicePolicy, allow
from promo_libs.identity import Workload as W

_STAFF = allow(W.BACK_OFFICE)

# Business figures (per user, per code, revenue): staff only.
POLICY = ServicePolicy(
    analytics_pb2.DESCRIPTOR.services_by_name["AnalyticsService"].full_name,
    {
        "GetPromoCodeStats": _STAFF,
        "ListTopPromoCodes": _STAFF,
        "GetUserStats": _STAFF,
        "GetOrdersTimeSeries": _STAFF,
        "GetOverview": _STAFF,
        "GetCampaignStats": _STAFF,
        "ListDiscountCosts": _STAFF,
    },
)
