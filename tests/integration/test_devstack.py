"""The local stack itself: servers answer, stop and start again on the same port with their data."""

from __future__ import annotations

import base64
import sys
from pathlib import Path
from typing import Any

import pytest
import redis
from pymongo import AsyncMongoClient

from devstack.ports import free_port
from devstack.probes import ping_clickhouse, ping_mongo, ping_redis
from devstack.processes import StartupError
from devstack.pytest_plugin import secrets_in_logs
from devstack.servers import ClickHouseServer
from devstack.service import ServiceProcess
from devstack.stack import Stack

pytestmark = pytest.mark.integration

# A stand-in service: mutual TLS from the files devstack hands every service, as ours do.
HEALTH_SERVER = """
import os, signal, sys, time
from concurrent import futures
from pathlib import Path
import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

server = grpc.server(futures.ThreadPoolExecutor(2))
servicer = health.HealthServicer()
health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
read = lambda name: Path(os.environ[name]).read_bytes()
credentials = grpc.ssl_server_credentials(
    [(read("GRPC_TLS_KEY_FILE"), read("GRPC_TLS_CERT_FILE"))],
    root_certificates=read("GRPC_TLS_CA_FILE"),
    require_client_auth=True,
)
server.add_secure_port(f"127.0.0.1:{sys.argv[1]}", credentials)
servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
server.start()
signal.signal(signal.SIGTERM, lambda *_: server.stop(0))
time.sleep(0.3)
servicer.set("", health_pb2.HealthCheckResponse.SERVING)
server.wait_for_termination()
"""


def test_every_server_answers(stack: Stack) -> None:
    assert stack.env["MONGODB_URI"] == stack.mongo_uri
    assert stack.env["CLICKHOUSE_DATABASE"] == "analytics"
    assert ping_mongo(stack.mongo_uri)
    assert ping_redis(stack.redis_host, stack.redis_port, password=stack.redis_password)
    assert ping_clickhouse(stack.clickhouse_host, stack.clickhouse_port)
    databases = stack.clickhouse_query("SHOW DATABASES")
    assert "analytics" in databases.split()


def test_mongo_db_names_are_unique(mongo_db_name: str) -> None:
    assert mongo_db_name.startswith("t_")
    assert len(mongo_db_name) < 64


async def test_mongo_restarts_on_same_port_with_its_data(
    stack: Stack, mongo_client: AsyncMongoClient[dict[str, Any]], mongo_db_name: str
) -> None:
    if not stack.is_managed("mongo"):
        pytest.skip("MongoDB comes from MONGODB_URI")
    uri = stack.mongo_uri
    await mongo_client[mongo_db_name].things.insert_one({"_id": "a", "n": 1})

    stack.stop_server("mongo")
    assert not ping_mongo(uri)
    stack.start_server("mongo")

    assert stack.mongo_uri == uri
    assert await mongo_client[mongo_db_name].things.find_one({"_id": "a"}) == {"_id": "a", "n": 1}


def test_redis_restarts_on_same_port_with_its_data(stack: Stack) -> None:
    if not stack.is_managed("redis"):
        pytest.skip("Redis comes from REDIS_HOST")
    port = stack.redis_port
    with redis.Redis(host=stack.redis_host, port=port, password=stack.redis_password) as client:
        client.set("devstack:test", "kept")

    stack.stop_server("redis")
    assert not ping_redis(stack.redis_host, port, password=stack.redis_password)
    stack.start_server("redis")

    assert stack.redis_port == port
    with redis.Redis(host=stack.redis_host, port=port, password=stack.redis_password) as client:
        assert client.get("devstack:test") == b"kept"


def test_clickhouse_restarts_on_same_port_with_its_data(stack: Stack) -> None:
    if not stack.is_managed("clickhouse"):
        pytest.skip("ClickHouse comes from CLICKHOUSE_HOST")
    host, port = stack.clickhouse_host, stack.clickhouse_port
    stack.clickhouse_query("CREATE TABLE analytics.devstack_t (n UInt32) ENGINE = Log")
    stack.clickhouse_query("INSERT INTO analytics.devstack_t VALUES (7)")

    with stack.server_down("clickhouse"):
        assert not ping_clickhouse(host, port)

    assert stack.clickhouse_port == port
    assert stack.clickhouse_query("SELECT sum(n) FROM analytics.devstack_t").strip() == "7"


def test_service_process_waits_for_serving_and_terminates(stack: Stack, tmp_path: Path) -> None:
    port = free_port()
    service = stack.service("health-demo", [sys.executable, "-c", HEALTH_SERVER, str(port)], port)
    service.start_and_wait()
    try:
        assert service.health() == "SERVING"
        assert service.child is not None
        assert service.child.pid is not None
        service.restart()
        assert service.health() == "SERVING"
    finally:
        assert service.terminate() == 0
    assert service.health() == "UNREACHABLE"


def test_service_process_that_dies_reports_its_log(tmp_path: Path) -> None:
    argv = [sys.executable, "-c", "import sys; print('boom: MONGODB_URI missing'); sys.exit(3)"]
    service = ServiceProcess("broken", argv, {}, free_port(), log_dir=tmp_path)
    service.start()
    with pytest.raises(StartupError, match=r"(?s)exited with code 3.*boom: MONGODB_URI missing"):
        service.wait_healthy(timeout=10)


def test_servers_from_the_environment_are_not_started(tmp_path: Path) -> None:
    environ = {
        "MONGODB_URI": "mongodb://db.example:27017",
        "REDIS_HOST": "cache.example",
        "CLICKHOUSE_HOST": "olap.example",
        "CLICKHOUSE_PORT": "18123",
    }
    external = Stack.from_environ(tmp_path, environ)
    with external:
        assert external.managed() == []
        assert external.env == {
            "MONGODB_URI": "mongodb://db.example:27017",
            "REDIS_HOST": "cache.example",
            "REDIS_PORT": "6379",
            "REDIS_PASSWORD": "",  # none given: a Redis without one, said explicitly
            "CLICKHOUSE_HOST": "olap.example",
            "CLICKHOUSE_PORT": "18123",
            "CLICKHOUSE_DATABASE": "analytics",
            "CLICKHOUSE_USER": "default",
            "CLICKHOUSE_PASSWORD": "",
        }
        with pytest.raises(RuntimeError, match="from the environment"):
            external.stop_server("redis")


def test_a_consumer_made_before_the_stack_starts_migrates_when_it_starts(tmp_path: Path) -> None:
    """`make run` (devstack run) makes its services before the servers are up: sync-consumer's
    ClickHouse migration (as the migrator) must wait for its start, not fail at once."""
    state = tmp_path / "state"
    stack = Stack.from_environ(state, environ={})
    consumer = stack.service("sync-consumer", [sys.executable, "-m", "sync_consumer"], free_port())
    assert not (state / "services" / "sync-consumer.migrate.log").exists()
    assert consumer.env["REDIS_USERNAME"] == "sync-consumer"  # its own Redis user, even so


def test_the_log_search_finds_every_kind_of_secret_of_the_run(tmp_path: Path) -> None:
    """What the session's stack fixture asserts at its end (no secret in any service log)
    can fail: a JWT of any issuer, a ClickHouse user's password and a key's line are found;
    a log without them is clean."""
    state = tmp_path / "state"
    stack = Stack.from_environ(state, environ={})
    clickhouse = stack.managed_clickhouse()
    writer_password = clickhouse.password(ClickHouseServer.USERS["sync-consumer"])
    key_line = next(
        line
        for line in stack.pki.files("orders").key.read_text().splitlines()
        if "-----" not in line
    )
    header = base64.urlsafe_b64encode(b'{"alg":"EdDSA","typ":"JWT"}').decode().rstrip("=")
    payload = base64.urlsafe_b64encode(b'{"sub":"u1","exp":1}').decode().rstrip("=")
    token = f"{header}.{payload}.{'s' * 86}"
    logs = state / "services"
    logs.mkdir(parents=True)
    (logs / "clean.log").write_text("event=order_created order_id=o1 user_id=u1\n")
    (logs / "jwt.log").write_text(f"authorization: Bearer {token}\n")
    (logs / "password.log").write_text(f"connecting with {writer_password}\n")
    (logs / "key.log").write_text(f"key {key_line}\n")
    found = secrets_in_logs(stack)
    assert sorted(entry.split(":")[0] for entry in found) == ["jwt.log", "key.log", "password.log"]
