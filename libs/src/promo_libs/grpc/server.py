"""The one gRPC server bootstrap every service runs on.

It wires what each server must have (DESIGN.md, Contracts): mutual TLS on the gRPC port
(promo_libs.grpc.tls: no plaintext port serves the API), the interceptor (authorization by the
service's policy table, request ids, logs, metrics, error mapping, deadlines), grpc.health.v1
with per-dependency entries (also alone on a plaintext port when GRPC_HEALTH_PORT is set, for
Kubernetes' probes), server reflection (operators only; GRPC_REFLECTION=false turns it off),
the Prometheus endpoint, the service's background loops, and a graceful shutdown on
SIGTERM/SIGINT: report NOT_SERVING, stop accepting, let in-flight RPCs finish within the grace
period, stop the loops, then close connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable, Collection, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import descriptor_pool
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from promo_libs.config import ServiceSettings
from promo_libs.grpc.authz import Authorizer, ServicePolicy
from promo_libs.grpc.errors import Driver
from promo_libs.grpc.health import HealthMonitor, Probe
from promo_libs.grpc.interceptors import ServerInterceptor
from promo_libs.grpc.limits import RateLimits
from promo_libs.grpc.reflection import enable_reflection
from promo_libs.grpc.tls import server_credentials
from promo_libs.logging import get_logger
from promo_libs.metrics import start_metrics_endpoint
from promo_libs.rate_limit import Limiter, LimitTable, Overrides
from promo_libs.user_tokens import UserTokenVerifier

log = get_logger(__name__)

MAX_MESSAGE_BYTES = 16 * 1024 * 1024


@dataclass
class GrpcApp:
    """What a service hands to `serve`: its servicers, dependencies, loops and clean-up."""

    name: str
    service_names: Sequence[str]
    register: Callable[[grpc.aio.Server], None]
    # Who may call what: one table per service in `service_names` (promo_libs.grpc.authz).
    policies: Sequence[ServicePolicy] = ()
    # How often (promo_libs.rate_limit), and the store of the buckets (Redis, shared by replicas).
    limits: LimitTable = field(default_factory=dict)
    limiter: Limiter | None = None
    probes: Mapping[str, Probe] = field(default_factory=dict)
    # Probes that are other services of the platform: part of the overall status, not of
    # readiness (promo_libs.grpc.health says why).
    peers: Collection[str] = ()
    background: Sequence[Callable[[], Coroutine[Any, Any, None]]] = ()
    # The data stores' adapters: what their failures mean to callers, and their operations
    # bounded by each RPC's deadline (promo_libs.grpc.errors.Driver).
    drivers: Sequence[Driver] = ()
    on_stop: Callable[[], Awaitable[None]] | None = None


class RunningServer:
    """A started server: the port it got, and a way to stop it (used by `serve` and by tests)."""

    def __init__(
        self,
        server: grpc.aio.Server,
        port: int,
        app: GrpcApp,
        grace: float,
        interceptor: ServerInterceptor,
    ) -> None:
        self.server = server
        self._interceptor = interceptor
        self.port = port
        self._app = app
        self._grace = grace
        self._tasks: list[asyncio.Task[None]] = []
        self.health = health.aio.HealthServicer()
        self.health_server: grpc.aio.Server | None = None
        self.health_port = 0

    async def stop(self) -> None:
        log.info("shutting down", grace_seconds=self._grace)
        await self.health.enter_graceful_shutdown()
        await self.server.stop(self._grace)
        if self.health_server is not None:
            await self.health_server.stop(0)
        # Use cases whose callers left still write through the connections closed below.
        await self._interceptor.drain(self._grace)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._app.on_stop is not None:
            await self._app.on_stop()
        log.info("stopped")


async def start(app: GrpcApp, settings: ServiceSettings) -> RunningServer:
    tls = settings.tls_paths()  # before anything binds: no TLS files, no server
    tokens = (
        None
        if settings.user_token_jwks_file is None
        else UserTokenVerifier(
            settings.user_token_jwks_file, settings.user_token_issuer, settings.user_token_audience
        )
    )
    authorizer = Authorizer(app.policies, settings.spiffe_trust_domain, tokens=tokens)
    pool = descriptor_pool.Default()
    authorizer.check_covers([pool.FindServiceByName(name) for name in app.service_names])
    limits = (
        None
        if app.limiter is None or not app.limits
        else RateLimits(app.limits, app.limiter, Overrides(settings.rate_limit_overrides))
    )
    interceptor = ServerInterceptor(
        authorizer, limits, settings.grpc_max_deadline_seconds, app.drivers
    )
    server = grpc.aio.server(
        interceptors=[interceptor],
        # Calls beyond this many at once are refused by gRPC itself (RESOURCE_EXHAUSTED)
        # instead of queueing without bound.
        maximum_concurrent_rpcs=settings.grpc_max_concurrent_rpcs,
        options=[
            ("grpc.max_receive_message_length", settings.grpc_max_receive_bytes),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
        ],
    )
    app.register(server)
    address = f"{settings.grpc_host}:{settings.grpc_port}"
    port = server.add_secure_port(address, server_credentials(tls))
    if port == 0:
        raise RuntimeError(f"cannot bind gRPC port {address}")
    running = RunningServer(server, port, app, settings.shutdown_grace_seconds, interceptor)
    health_pb2_grpc.add_HealthServicer_to_server(running.health, server)
    if settings.grpc_reflection:
        enable_reflection([*app.service_names, health.SERVICE_NAME], server)
    if settings.grpc_health_port:
        # Health alone, without TLS: what a kubelet probe can reach. Same servicer, so both
        # ports always tell the same status; nothing else is registered on this server.
        running.health_server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        health_pb2_grpc.add_HealthServicer_to_server(running.health, running.health_server)
        health_address = f"{settings.grpc_host}:{settings.grpc_health_port}"
        running.health_port = running.health_server.add_insecure_port(health_address)
        if running.health_port == 0:
            raise RuntimeError(f"cannot bind health port {health_address}")
    monitor = HealthMonitor(running.health, app.probes, app.service_names, peers=app.peers)
    await monitor.check_once()  # no window where health answers UNKNOWN
    start_metrics_endpoint(settings.metrics_port)
    await server.start()
    if running.health_server is not None:
        await running.health_server.start()
    running._tasks.append(
        asyncio.create_task(monitor.run(settings.health_check_interval_seconds), name="health")
    )
    for loop in app.background:
        running._tasks.append(asyncio.create_task(loop(), name=getattr(loop, "__name__", "bg")))
    log.info(
        "serving",
        app=app.name,
        grpc=f"{settings.grpc_host}:{port}",
        tls="mutual",
        health_port=running.health_port or None,
        metrics_port=settings.metrics_port,
        services=list(app.service_names),
    )
    return running


async def serve(app: GrpcApp, settings: ServiceSettings) -> None:
    """Runs `app` until SIGTERM or SIGINT, then shuts it down gracefully."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    running = await start(app, settings)
    await stop.wait()
    await running.stop()


__all__ = ["GrpcApp", "RunningServer", "health_pb2", "serve", "start"]
