"""Overall health follows the dependencies; liveness follows only the process itself."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from grpc_health.v1 import health, health_pb2

from promo_libs.grpc.health import (
    LIVENESS,
    NOT_SERVING,
    READINESS,
    SERVING,
    HealthMonitor,
    Probe,
)

SERVICE = "promo.v1.UserService"


async def status(servicer: health.aio.HealthServicer, service: str) -> Any:
    context: Any = None  # only consulted for names that were never set
    answer = await servicer.Check(health_pb2.HealthCheckRequest(service=service), context)
    return answer.status


async def test_a_dependency_down_makes_the_service_unready_but_not_dead() -> None:
    servicer = health.aio.HealthServicer()
    up = {"mongo": True}

    async def mongo() -> bool:
        return up["mongo"]

    monitor = HealthMonitor(servicer, {"mongo": mongo}, [SERVICE])
    assert await monitor.check_once() is True
    up["mongo"] = False
    assert await monitor.check_once() is False
    assert await status(servicer, "mongo") == NOT_SERVING
    assert await status(servicer, "") == NOT_SERVING
    assert await status(servicer, SERVICE) == NOT_SERVING
    assert await status(servicer, READINESS) == NOT_SERVING
    assert await status(servicer, LIVENESS) == SERVING


async def test_a_peer_service_down_leaves_the_service_ready() -> None:
    servicer = health.aio.HealthServicer()
    up = {"mongo": True, "users": False}

    def probe(name: str) -> Probe:
        async def answer() -> bool:
            return up[name]

        return answer

    monitor = HealthMonitor(servicer, {n: probe(n) for n in up}, [SERVICE], peers={"users"})
    assert await monitor.check_once() is False
    assert await status(servicer, "users") == NOT_SERVING
    assert await status(servicer, "") == NOT_SERVING  # DESIGN.md: a dependency is down
    assert await status(servicer, READINESS) == SERVING  # but its own store answers
    up["mongo"] = False
    await monitor.check_once()
    assert await status(servicer, READINESS) == NOT_SERVING


def test_a_peer_must_be_one_of_the_probes() -> None:
    with pytest.raises(ValueError, match="peers without a probe"):
        HealthMonitor(health.aio.HealthServicer(), {}, [], peers={"users"})


async def test_a_probe_that_raises_or_hangs_counts_as_down() -> None:
    servicer = health.aio.HealthServicer()

    async def broken() -> bool:
        raise ConnectionError("refused")

    async def hanging() -> bool:
        await asyncio.Event().wait()
        return True

    monitor = HealthMonitor(servicer, {"a": broken, "b": hanging}, [], probe_timeout=0.05)
    assert await monitor.check_once() is False
    assert await status(servicer, "a") == NOT_SERVING
    assert await status(servicer, "b") == NOT_SERVING


async def test_a_health_loop_that_dies_marks_the_process_not_alive(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    servicer = health.aio.HealthServicer()
    monitor = HealthMonitor(servicer, {}, [SERVICE])
    await monitor.check_once()
    assert await status(servicer, LIVENESS) == SERVING

    async def crash() -> bool:
        raise RuntimeError("a bug in the health loop")

    monkeypatch.setattr(monitor, "check_once", crash)
    with pytest.raises(RuntimeError):
        await monitor.run(interval=0.01)
    assert await status(servicer, LIVENESS) == NOT_SERVING
