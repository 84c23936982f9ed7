"""Prometheus metrics shared by every process, and the HTTP endpoint that serves them."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

RPC_HANDLED = Counter(
    "grpc_server_handled_total",
    "RPCs completed on the server, by method and status code",
    ["grpc_service", "grpc_method", "grpc_code"],
)
RPC_LATENCY = Histogram(
    "grpc_server_handling_seconds",
    "Time to handle an RPC on the server",
    ["grpc_service", "grpc_method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
DEPENDENCY_UP = Gauge(
    "dependency_up", "1 when the dependency answered its last health check", ["dependency"]
)
MONGO_COMMAND_LATENCY = Histogram(
    "mongodb_command_seconds",
    "MongoDB command round-trip time, by command name and outcome",
    ["command", "outcome"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5),
)
MONGO_POOL_CHECKED_OUT = Gauge(
    "mongodb_pool_connections_checked_out", "Connections currently lent out by the pool"
)
MONGO_POOL_OPEN = Gauge("mongodb_pool_connections_open", "Connections the pool holds open")
MONGO_DATABASE_SIZE = Gauge(
    "mongodb_database_size_bytes", "Storage size of the service's database (dbStats)", ["database"]
)


def start_metrics_endpoint(port: int) -> None:
    """Serves /metrics on `port` from a daemon thread; 0 switches the endpoint off."""
    if port:
        start_http_server(port)
