"""Workload identities: who is calling, as the service layer sees it (no gRPC here).

A caller is identified by the SPIFFE ID in the URI SAN of the certificate it presented
(`spiffe://<trust domain>/ns/<namespace>/sa/<service account>`); the service account name is
the workload, the vocabulary the policy tables are written in. The interceptor that verified the
certificate (promo_libs.grpc.authz) sets `current_caller` for the duration of the call, so use
cases can ask who calls them without any transport in their signature.
"""

from __future__ import annotations

import contextvars
import re
from dataclasses import dataclass
from enum import StrEnum

from promo_libs import errors


class Workload(StrEnum):
    """Every identity the platform issues certificates to."""

    USERS = "users"
    PROMOCODES = "promocodes"
    ORDERS = "orders"
    ANALYTICS = "analytics"
    SYNC_CONSUMER = "sync-consumer"
    # People's tools: the staff back office (catalogue, users, analytics, order support), the
    # customer-facing storefront (acts for one signed-in user), operators (reflection, debugging).
    BACK_OFFICE = "back-office"
    STOREFRONT = "storefront"
    OPERATOR = "operator"


_SPIFFE = re.compile(
    r"^spiffe://(?P<domain>[a-z0-9._-]+)/ns/(?P<ns>[a-z0-9-]+)/sa/(?P<sa>[a-z0-9-]+)$"
)


@dataclass(frozen=True)
class Caller:
    """An authenticated peer: its full SPIFFE ID and the workload it names."""

    spiffe_id: str
    workload: Workload


def parse_spiffe_id(spiffe_id: str, trust_domain: str) -> Caller | None:
    """The caller a SPIFFE ID names, None when it is of another trust domain or no workload."""
    match = _SPIFFE.match(spiffe_id)
    if match is None or match["domain"] != trust_domain:
        return None
    try:
        workload = Workload(match["sa"])
    except ValueError:
        return None
    return Caller(spiffe_id, workload)


current_caller: contextvars.ContextVar[Caller | None] = contextvars.ContextVar(
    "current_caller", default=None
)


# The end user a call is made for: the subject of the verified user token it carried (None when
# it carried none). Set by the same interceptor, after it verified the token's signature.
current_user: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "current_user", default=None
)

# Workloads that act for people: their calls on a user's data must carry that user's token.
ACTS_FOR_USERS = frozenset({Workload.STOREFRONT})


def require_acting_for(user_id: str) -> None:
    """Refuses a call on `user_id`'s data unless the caller may act for that user (DESIGN.md I7).

    The storefront acts for one signed-in user: its call must carry a token whose subject is
    `user_id`. Staff (back office) and the platform's own services are trusted with every user
    (their calls are authorized per method already). Outside gRPC (no caller: unit tests, the
    sweep and recovery commands) there is nobody to check.
    """
    caller = current_caller.get()
    if caller is None or caller.workload not in ACTS_FOR_USERS:
        return
    subject = current_user.get()
    if subject is None:
        raise errors.Unauthenticated(
            "this call is made for a user and needs that user's token",
            reason="INVALID_USER_TOKEN",
        )
    if subject != user_id:
        raise errors.PermissionDenied("the user token is another user's", reason="NOT_THIS_USER")


def acts_for_a_user() -> bool:
    """Whether the caller is a workload acting for one user (e.g. to ask a current password)."""
    caller = current_caller.get()
    return caller is not None and caller.workload in ACTS_FOR_USERS
