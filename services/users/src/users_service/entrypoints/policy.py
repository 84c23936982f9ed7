"""Who may call UserService (promo_libs.grpc.authz enforces it; DESIGN.md I7).

Deny by default: a method missing here stops the server at start-up.
"""

from __future__ import annotations

from promo.v1 import users_pb2
from promo_libs.grpc.authz import ServicePolicy, allow
from promo_libs.identity import Workload as W

POLICY = ServicePolicy(
    users_pb2.DESCRIPTOR.services_by_name["UserService"].full_name,
    {
        # Sign-up from the storefront; accounts made by staff from the back office.
        "CreateUser": allow(W.BACK_OFFICE, W.STOREFRONT),
        # Orders and promo codes check the user of a request; the storefront shows its own user.
        "GetUser": allow(W.ORDERS, W.PROMOCODES, W.BACK_OFFICE, W.STOREFRONT),
        # Every email at once: staff only.
        "ListUsers": allow(W.BACK_OFFICE),
        "UpdateUser": allow(W.BACK_OFFICE, W.STOREFRONT),
        "DeleteUser": allow(W.BACK_OFFICE),
        # Log-in is the storefront's; nothing else needs to test passwords.
        "AuthenticateUser": allow(W.STOREFRONT),
    },
)
