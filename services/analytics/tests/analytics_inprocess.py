"""AnalyticsService methods called in process: the servicer over a given store, no network.

Errors come back as their reason (or status class name), like over the wire.
"""

from __future__ import annotations

from typing import Any

from analytics_service.domain.ports import AnalyticsStore
from analytics_service.entrypoints.grpc_servicer import AnalyticsServicer
from analytics_service.service_layer.analytics import Analytics
from promo_libs.errors import DomainError


class FakeContext:
    def time_remaining(self) -> float | None:
        return None


def servicer_call(store: AnalyticsStore) -> Any:
    servicer = AnalyticsServicer(Analytics(store))
    context = FakeContext()

    async def call(method: str, request: Any) -> Any:
        try:
            return await getattr(servicer, method)(request, context)
        except DomainError as exc:
            return exc.reason or type(exc).__name__

    return call
