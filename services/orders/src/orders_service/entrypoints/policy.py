"""Who may call OrderService (promo_libs.grpc.authz enforces it; DESIGN.md I7).

Deny by default: a method missing here stops the server at start-up.
"""

from __future__ import annotations

from promo.v1 import orders_pb2
from promo_libs.grpc.authz import ServicePolicy, allow
from promo_libs.identity import Workload as W

POLICY = ServicePolicy(
    orders_pb2.DESCRIPTOR.services_by_name["OrderService"].full_name,
    {
        # Shoppers order through the storefront (for themselves: their user token); staff may
        # place one for a customer (orders taken by phone).
        "CreateOrder": allow(W.STOREFRONT, W.BACK_OFFICE),
        # A shopper's own orders (storefront) and customer support (back office).
        "GetOrder": allow(W.STOREFRONT, W.BACK_OFFICE),
        "ListOrders": allow(W.STOREFRONT, W.BACK_OFFICE),
        "CancelOrder": allow(W.STOREFRONT, W.BACK_OFFICE),
    },
)
