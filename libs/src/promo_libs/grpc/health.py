"""Health reporting: one entry per dependency plus the overall status and each served service.

`grpc.health.v1.Health/Check` with service "" (overall) or a service name is SERVING only while
every dependency answers; with a dependency's name ("mongo", "redis", "clickhouse", "users", ...)
it reports that dependency alone. A background loop re-checks them every few seconds.

The entry "liveness" says only that the process itself works: its event loop answers and its
health loop runs. It stays SERVING while a dependency is down, because restarting the process
would not bring the dependency back (a liveness probe on the overall status turns an outage of
MongoDB into a restart of every pod); it goes NOT_SERVING if the health loop dies.

The entry "readiness" follows the service's own data stores only, not the peer services it calls
(`peers`, e.g. "users" for promocodes). When a peer is down every replica is equally affected:
taking them all out of load balancing would turn a partial outage (orders without a code, reads)
into a total one, and the calls that need the peer already fail fast with UNAVAILABLE.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence

from grpc_health.v1 import health, health_pb2

from promo_libs.logging import get_logger
from promo_libs.metrics import DEPENDENCY_UP

Probe = Callable[[], Awaitable[bool]]

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

LIVENESS = "liveness"
READINESS = "readiness"

log = get_logger(__name__)


class HealthMonitor:
    def __init__(
        self,
        servicer: health.aio.HealthServicer,
        probes: Mapping[str, Probe],
        served_services: Sequence[str],
        probe_timeout: float = 2.0,
        peers: Collection[str] = (),
    ) -> None:
        unknown = set(peers) - set(probes)
        if unknown:
            raise ValueError(f"peers without a probe: {sorted(unknown)}")
        self._peers = frozenset(peers)
        self._servicer = servicer
        self._probes = dict(probes)
        self._served = list(served_services)
        self._probe_timeout = probe_timeout
        self._last: dict[str, bool] = {}

    async def _probe(self, name: str, probe: Probe) -> bool:
        try:
            return await asyncio.wait_for(probe(), self._probe_timeout)
        except Exception:  # a probe that fails in any way means "down"
            return False

    async def check_once(self) -> bool:
        names = list(self._probes)
        results = await asyncio.gather(*(self._probe(n, self._probes[n]) for n in names))
        for name, up in zip(names, results, strict=True):
            if self._last.get(name) != up:
                log.info("dependency health changed", dependency=name, up=up)
            self._last[name] = up
            DEPENDENCY_UP.labels(name).set(1 if up else 0)
            await self._servicer.set(name, SERVING if up else NOT_SERVING)
        overall = all(results)
        for service in ["", *self._served]:
            await self._servicer.set(service, SERVING if overall else NOT_SERVING)
        ready = all(up for name, up in zip(names, results, strict=True) if name not in self._peers)
        await self._servicer.set(READINESS, SERVING if ready else NOT_SERVING)
        await self._servicer.set(LIVENESS, SERVING)
        return overall

    async def run(self, interval: float) -> None:
        try:
            while True:
                await self.check_once()
                await asyncio.sleep(interval)
        except asyncio.CancelledError:
            raise
        except Exception:
            # Nothing would update the statuses any more: let the orchestrator restart us.
            log.exception("health loop died")
            await self._servicer.set(LIVENESS, NOT_SERVING)
            raise
