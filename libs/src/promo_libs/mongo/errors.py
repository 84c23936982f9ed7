"""What PyMongo's failures mean to a caller, in the pure error model (promo_libs.errors).

The shared gRPC layer knows no database: it maps `promo_libs.errors` to statuses and asks the
drivers the service was built with (promo_libs.grpc.errors.Driver) about anything else. This
is MongoDB's entry: which failures are the database being unreachable (UNAVAILABLE, retry
later), which are the RPC's own deadline passing (PyMongo's client-side operation timeout), and
the operation timeout itself, bound around every RPC by the interceptor.
"""

from __future__ import annotations

from contextlib import AbstractContextManager

import pymongo
from pymongo import errors as mongo_errors

from promo_libs import errors

# Failures of MongoDB itself (not of the request): the caller may retry later.
_UNAVAILABLE = (
    mongo_errors.ConnectionFailure,
    mongo_errors.ServerSelectionTimeoutError,
    mongo_errors.NetworkTimeout,
    mongo_errors.AutoReconnect,
)


class MongoDriver:
    """MongoDB's part of the error mapping and of the per-RPC deadline."""

    name = "mongo"

    def translate(self, exc: BaseException) -> errors.DomainError | None:
        if not isinstance(exc, mongo_errors.PyMongoError):
            return None
        # ServerSelectionTimeoutError is a timeout, but of finding a server: unreachable.
        if exc.timeout and not isinstance(exc, mongo_errors.ServerSelectionTimeoutError):
            return errors.DeadlineExceeded("the deadline passed before the operation completed")
        if isinstance(exc, _UNAVAILABLE):
            return errors.Unavailable(
                "the database is unavailable",
                reason="DEPENDENCY_UNAVAILABLE",
                metadata={"dependency": "mongo"},
            )
        return None

    def bound(self, seconds: float) -> AbstractContextManager[None]:
        """Every MongoDB operation within is bounded by `seconds` (PyMongo's own timeout)."""
        return pymongo.timeout(seconds)


MONGO = MongoDriver()
