"""How often UserService may be called (promo_libs.rate_limit; DESIGN.md I7).

Log-in is what attackers guess passwords through: a bucket per email (a slow trickle per
account, whichever replica or caller), one for the storefront as a whole, and an exponential
lock-out per email after three wrong passwords, cleared by a successful log-in.

While Redis is down, log-in is refused (UNAVAILABLE, DEPENDENCY_UNAVAILABLE): these limits are
the guard against password guessing, and an outage of the cache must not open it. Shoppers
already signed in keep their tokens; only new log-ins wait for Redis.
"""

from __future__ import annotations

from typing import Any

from promo.v1 import users_pb2
from promo_libs.rate_limit import Backoff, Bucket, IfStoreDown, LimitTable, MethodLimits

_SERVICE = users_pb2.DESCRIPTOR.services_by_name["UserService"].full_name


def _email(request: Any) -> str:
    return str(request.email).strip().lower()


LIMITS: LimitTable = {
    f"/{_SERVICE}/AuthenticateUser": MethodLimits(
        if_store_down=IfStoreDown.REFUSE,
        per_caller=(100.0, 200),
        buckets=[Bucket("email", _email, rate=0.2, burst=10)],
        backoff=Backoff("login", _email, frozenset({"INVALID_CREDENTIALS"}), free=3),
    ),
}
