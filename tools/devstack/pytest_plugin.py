"""Pytest fixtures for the local stack. The root conftest.py registers this plugin.

- `stack` (session): MongoDB (nx-27017), Redis and ClickHouse in a temporary state folder, or the
  servers named by MONGODB_URI / REDIS_HOST / CLICKHOUSE_HOST. A server a test left stopped is
  started again after that test. When the session ends, every service log it wrote is searched
  for the secrets the run used (`SECRETS_USED`, the private keys of its certificates, the data
  stores' passwords): one found fails the session (DESIGN.md: no secret ever reaches a log).
- `mongo_db_name` (function): a database name no other test uses; dropped after the test.
- `mongo_client` (function, async, session loop): an AsyncMongoClient to the stack (tz_aware);
  fails the test when a command it sent is one MongoDB refuses and the stand-in applies.
- `start_service` (function): starts ServiceProcess children with the stack's env and waits until
  they are SERVING; all of them are terminated after the test.
- `redis_cluster` (session): a local Redis Cluster (three masters, cluster mode, free ports),
  started only when a test asks for it; `.env()` points a service at it.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import re
import secrets
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from typing import Any

import pymongo
import pymongo.errors
import pytest
import pytest_asyncio
from pymongo import AsyncMongoClient

from devstack.mongo_rules import MongoRules
from devstack.ports import free_port
from devstack.redis_acl import RedisUsers
from devstack.servers import ClickHouseServer, RedisCluster
from devstack.service import ServiceProcess
from devstack.stack import Stack
from devstack.state import PidRegistry

_STACK_KEY = pytest.StashKey[Stack]()
_SESSION_TOKEN = secrets.token_hex(3)
_db_counter = itertools.count(1)

StartService = Callable[..., ServiceProcess]

# The passwords the suite's tests send (a test that adds one adds it here).
SECRETS_USED = (
    "correct horse battery",
    "correct horse 1",
    "benchmark password 1",
    "password123",
    "another good secret",
    "a brand new secret",
    "s3cret-mongo-PW",
    "bus acl password 1",
    "acl test password 1",
)


def secrets_in_logs(local_stack: Stack) -> list[str]:
    """`file: secret` for each secret of the run found in a service log of `local_stack`."""
    secrets_: set[str] = set(SECRETS_USED)
    for key in local_stack.pki.secret_files():
        # A line of the key's base64 body is as telling as the whole key.
        secrets_.update(line for line in key.read_text().splitlines() if "-----" not in line)
    for name, value in local_stack.env.items():
        if "PASSWORD" in name and value:
            secrets_.add(value)
    users = RedisUsers(local_stack.state_dir)
    if users.file.exists():  # the stack's Redis users' passwords (devstack.redis_acl)
        secrets_.update(users.passwords().values())
    clickhouse = local_stack.servers["clickhouse"]
    if isinstance(clickhouse, ClickHouseServer):  # its users' passwords, not only the admin's
        secrets_.update(clickhouse.users.passwords().values())
    found: list[str] = []
    for log in sorted((local_stack.state_dir / "services").glob("*.log")):
        text = log.read_text(errors="replace")
        found.extend(f"{log.name}: {secret[:6]}..." for secret in secrets_ if secret in text)
        # Every JWT, whoever issued it (users' AuthenticateUser, a test's own): none belongs
        # in a log, and its shape is unmistakable (base64url header, payload, signature).
        found.extend(f"{log.name}: a JWT {token[:10]}..." for token in _JWT.findall(text))
    return found


_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{16,}")


@pytest.fixture(scope="session")
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    local_stack = Stack.from_environ(tmp_path_factory.mktemp("devstack"))
    local_stack.start()
    request.config.stash[_STACK_KEY] = local_stack
    try:
        yield local_stack
        leaked = secrets_in_logs(local_stack)
        assert not leaked, f"secrets in service logs: {leaked}"
    finally:
        del request.config.stash[_STACK_KEY]
        local_stack.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    state = tmp_path_factory.mktemp("redis-cluster")
    cluster = RedisCluster(state, PidRegistry(state))
    print(f"devstack: starting a Redis Cluster at {cluster.address()}")
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(autouse=True)
def _devstack_restore_servers(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each test, start again any managed server the test stopped and did not restart."""
    yield
    local_stack = request.config.stash.get(_STACK_KEY, None)
    if local_stack is None:
        return
    for server in local_stack.managed():
        if not server.running:
            server.start()


@pytest.fixture
def mongo_db_name(request: pytest.FixtureRequest, stack: Stack) -> Iterator[str]:
    digest = hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:8]
    name = f"t_{digest}_{_SESSION_TOKEN}_{next(_db_counter)}"
    yield name
    if stack.is_managed("mongo") and not stack.managed_server("mongo").running:
        return  # a test left it stopped; its files go with the state folder
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
        stack.mongo_uri, serverSelectionTimeoutMS=2000
    )
    with contextlib.suppress(pymongo.errors.PyMongoError), client:
        client.drop_database(name)


@pytest_asyncio.fixture(loop_scope="session")
async def mongo_client(stack: Stack) -> AsyncIterator[AsyncMongoClient[dict[str, Any]]]:
    # Every command the test sends is checked against refusals of MongoDB that the stand-in does
    # not make (devstack.mongo_rules): the suite must not pass on a permission of the stand-in.
    rules = MongoRules()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        stack.mongo_uri, tz_aware=True, serverSelectionTimeoutMS=10_000, event_listeners=[rules]
    )
    try:
        yield client
    finally:
        await client.close()
    assert rules.refusals == [], f"MongoDB would refuse: {rules.refusals}"


@pytest.fixture
def start_service(stack: Stack) -> Iterator[StartService]:
    """`start_service(name, argv, grpc_port=None, extra_env=None, wait=True) -> ServiceProcess`."""
    started: list[ServiceProcess] = []

    def start(
        name: str,
        argv: Sequence[str],
        grpc_port: int | None = None,
        extra_env: Mapping[str, str] | None = None,
        *,
        wait: bool = True,
    ) -> ServiceProcess:
        # A metrics port of its own, so services started side by side never collide.
        env = {"METRICS_PORT": str(free_port()), **(extra_env or {})}
        service = stack.service(name, argv, grpc_port or free_port(), env)
        started.append(service)
        if wait:
            service.start_and_wait()
        else:
            service.start()
        return service

    yield start
    for service in reversed(started):
        service.terminate()
