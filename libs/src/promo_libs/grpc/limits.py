"""Applies a service's LimitTable (promo_libs.rate_limit) to its calls, for the interceptor."""

from __future__ import annotations

from typing import Any

from promo_libs import errors
from promo_libs.identity import ACTS_FOR_USERS, current_caller
from promo_libs.logging import get_logger
from promo_libs.rate_limit import (
    IfStoreDown,
    Limiter,
    LimitTable,
    Overrides,
    bucket_key,
    exhausted,
)

log = get_logger(__name__)


class RateLimits:
    def __init__(
        self, table: LimitTable, limiter: Limiter, overrides: Overrides | None = None
    ) -> None:
        self._table = table
        self._limiter = limiter
        self._overrides = overrides or Overrides()

    async def admit(self, full_method: str, request: Any) -> None:
        """Raises errors.ResourceExhausted when a bucket of the call is empty or its key is
        locked out. When Redis cannot tell, the method's `if_store_down` decides: the call is
        let through, or refused with errors.Unavailable (see promo_libs.rate_limit)."""
        limits = self._table.get(full_method)
        if limits is None:
            return
        try:
            caller = current_caller.get()
            if (
                limits.per_caller is not None
                and caller is not None
                and caller.workload in ACTS_FOR_USERS
            ):
                rate, burst = self._overrides.of("caller", *limits.per_caller)
                key = bucket_key("caller", f"{caller.spiffe_id}{full_method}")
                if (wait := await self._limiter.take(key, rate, burst)) > 0:
                    raise exhausted("RATE_LIMITED", wait, "calls from this caller")
            if limits.backoff is not None and (value := limits.backoff.key(request)):
                key = bucket_key(limits.backoff.scope, value)
                if (wait := await self._limiter.blocked_for(key)) > 0:
                    raise exhausted("TOO_MANY_FAILURES", wait, "failed attempts")
            for bucket in limits.buckets:
                if not (value := bucket.key(request)):
                    continue
                rate, burst = self._overrides.of(bucket.scope, bucket.rate, bucket.burst)
                wait = await self._limiter.take(bucket_key(bucket.scope, value), rate, burst)
                if wait > 0:
                    raise exhausted("RATE_LIMITED", wait, f"calls for this {bucket.scope}")
        except errors.ResourceExhausted:
            raise
        except Exception as exc:
            if limits.if_store_down is IfStoreDown.REFUSE:
                log.warning("rate limits unavailable; call refused", error=repr(exc))
                raise errors.Unavailable(
                    "rate limits cannot be checked right now; retry later",
                    "DEPENDENCY_UNAVAILABLE",
                ) from exc
            log.warning("rate limits unavailable; call let through", error=repr(exc))

    async def failed(self, full_method: str, request: Any, exc: BaseException) -> None:
        limits = self._table.get(full_method)
        backoff = None if limits is None else limits.backoff
        if backoff is None or not isinstance(exc, errors.DomainError):
            return
        if exc.reason in backoff.reasons and (value := backoff.key(request)):
            try:
                await self._limiter.fail(bucket_key(backoff.scope, value), backoff)
            except Exception as error:
                log.warning("could not record a failed attempt", error=repr(error))

    async def succeeded(self, full_method: str, request: Any) -> None:
        limits = self._table.get(full_method)
        backoff = None if limits is None else limits.backoff
        if backoff is not None and (value := backoff.key(request)):
            try:
                await self._limiter.succeed(bucket_key(backoff.scope, value))
            except Exception as error:
                log.warning("could not clear failed attempts", error=repr(error))
