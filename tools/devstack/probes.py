"""Is it up? One short, exception-free check per kind of server."""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request
from base64 import b64encode
from collections.abc import Mapping
from typing import Any

import grpc
import pymongo
import pymongo.errors
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc

from promo_libs.config import TlsPaths
from promo_libs.grpc.client import secure_sync_channel


def ping_redis(
    host: str,
    port: int,
    timeout: float = 0.5,
    tls: TlsPaths | None = None,
    password: str | None = None,
) -> bool:
    """Whether Redis answers; over TLS with `tls`'s certificate (a TLS-only server); as the
    administrator `default` with `password` (a server with ACL users)."""
    secure: dict[str, Any] = {}
    if tls is not None:
        secure = {
            "ssl": True,
            "ssl_ca_certs": str(tls.ca),
            "ssl_certfile": str(tls.cert),
            "ssl_keyfile": str(tls.key),
        }
    client = redis.Redis(
        host=host,
        port=port,
        password=password,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        **secure,
    )
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def cluster_state(host: str, port: int, timeout: float = 0.5) -> str:
    """A Redis Cluster node's `cluster_state` (ok or fail), or the error reaching it."""
    client = redis.Redis(host=host, port=port, socket_timeout=timeout)
    try:
        return str(client.cluster("INFO").get("cluster_state", "unknown"))
    except redis.RedisError as exc:
        return repr(exc)
    finally:
        client.close()


def ping_clickhouse(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/ping", timeout=timeout) as response:
            return bool(response.read().strip() == b"Ok.")
    except (urllib.error.URLError, OSError):
        return False


def clickhouse_query(
    host: str,
    port: int,
    sql: str,
    timeout: float = 10.0,
    settings: Mapping[str, str] | None = None,
    *,
    password: str,
    user: str = "default",
) -> str:
    """Run one statement over HTTP as `user` (the administrator by default); raises on error.

    `settings` go in the URL (query-level settings such as max_memory_usage: 18.16's INSERT ...
    SELECT takes no SETTINGS clause for the insert itself). The credentials travel as HTTP basic
    authentication, never in the URL (which a proxy's access log would keep)."""
    query = "?" + urllib.parse.urlencode(settings) if settings else ""
    request = urllib.request.Request(
        f"http://{host}:{port}/{query}",
        data=sql.encode(),
        method="POST",
        headers={"Authorization": "Basic " + b64encode(f"{user}:{password}".encode()).decode()},
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        body: bytes = response.read()
    return body.decode()


def ping_mongo(uri: str, timeout: float = 0.5) -> bool:
    ms = int(timeout * 1000)
    client: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(
        uri, serverSelectionTimeoutMS=ms, connectTimeoutMS=ms, socketTimeoutMS=ms
    )
    try:
        client.admin.command("ping")
    except pymongo.errors.PyMongoError:
        return False
    finally:
        client.close()
    return True


def grpc_health_status(
    address: str, tls: TlsPaths | None, service: str = "", timeout: float = 1.0
) -> str:
    """`SERVING`, `NOT_SERVING`, ... as the server reports it, or `UNREACHABLE`.

    Over mutual TLS with `tls`; `None` asks a plaintext health-only port (GRPC_HEALTH_PORT).
    """
    opened = grpc.insecure_channel(address) if tls is None else secure_sync_channel(address, tls)
    with opened as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError:
            return "UNREACHABLE"
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))
