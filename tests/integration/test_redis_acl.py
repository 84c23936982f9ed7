"""The dev overlay's Redis ACL users, as rendered from deploy/ (the `--user` rules of its
redis-server), loaded into a real local redis-server: each service's own Redis code runs as its
user, and what the user must not do is refused (NOPERM). A rule that misses a command the code
sends fails here, not in a cluster.

Local limit: Redis here is 7.0, which has no WAITAOF, so the outbox's durability check falls
back to CONFIG GET, which no service user may run (it would read requirepass); the deployments
run Redis 7.2+, where the check is WAITAOF. The test asserts that refusal on 7.0, and that with
REDIS_APPENDFSYNC_ALWAYS (what the local stack sets: it runs appendfsync always) the check
needs only INFO, which the users have.

The local stack runs these same rules (devstack.redis_acl): the last tests check that the
stack's Redis refuses a client without a password and that each service it starts logs in as
its own user.
"""

from __future__ import annotations

import shutil
import stat
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis
import redis.exceptions
from pydantic import SecretStr

from devstack.ports import free_port
from devstack.redis_acl import RedisUsers, local_rules, manifest_rules
from devstack.servers import RedisServer, redis_version
from devstack.stack import Stack
from promo_libs.bus import NotDurable, RedisClient, RedisStreamPublisher, redis_client
from promo_libs.config import RedisSettings
from promo_libs.events import ORDERS_STREAM, PROMO_CODES_STREAM, USERS_STREAM
from promo_libs.outbox import OutboxEntry
from promo_libs.rate_limit import Backoff, RedisLimiter, bucket_key
from sync_consumer.adapters.rebuild_gate import RebuildHold, RedisRebuildGate
from sync_consumer.adapters.redis_streams import (
    RedisConsumerGroup,
    RedisDeadLetters,
    RedisFailureCounter,
    dead_letter_stream,
    replay_dead_letters,
)
from sync_consumer.domain.model import DeadLetter
from tests.deploy.deploy_support import containers, render, workloads

pytestmark = pytest.mark.integration

PASSWORD = "acl test password 1"  # in the pytest plugin's SECRETS_USED
# Granted in the manifest for the deployments' Redis 7.2+, unknown to the local 7.0.
NEWER_THAN_LOCAL = {"+waitaof"}


def dev_overlay_rules() -> dict[str, list[str]]:
    """user name -> its ACL rule tokens, from the rendered dev overlay's redis-server command."""
    (redis_container,) = containers(workloads(render("dev"))["redis"]["pod"])
    command = redis_container["command"]
    rules = [command[n + 1] for n, arg in enumerate(command) if arg == "--user"]
    parsed = {}
    for rule in rules:
        name, *tokens = rule.split()
        # The password comes from the Secret through the kubelet; here, the test's own.
        parsed[name] = [f">{PASSWORD}" if t.startswith(">$(") else t for t in tokens]
    return parsed


RULES = dev_overlay_rules()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    acl = RedisServer(tmp_path_factory.mktemp("redis-acl"), None, name="redis-acl")
    acl.start()
    try:
        yield acl
    finally:
        acl.stop()


@pytest.fixture(scope="module")
async def admin(server: RedisServer) -> AsyncIterator[RedisClient]:
    client = redis_client(
        RedisSettings(redis_host="127.0.0.1", redis_port=server.port, redis_password=None)
    )
    for name, tokens in RULES.items():
        known = list(tokens)
        while True:
            try:
                await client.execute_command("ACL", "SETUSER", name, "reset", *known)
                break
            except redis.exceptions.ResponseError as exc:
                # A command of a newer Redis than this 7.0: dropped, but only those named.
                (unknown,) = [t for t in known if f"'{t}'" in str(exc)]
                assert unknown in NEWER_THAN_LOCAL, f"{name}: {exc}"
                known.remove(unknown)
    yield client
    await client.aclose()


def as_user(server: RedisServer, name: str) -> RedisClient:
    return redis_client(
        RedisSettings(
            redis_host="127.0.0.1",
            redis_port=server.port,
            redis_username=name,
            redis_password=SecretStr(PASSWORD),
        )
    )


def test_every_service_that_uses_redis_has_a_user() -> None:
    assert set(RULES) == {"users", "promocodes", "orders", "sync-consumer"}


PRODUCERS = [
    ("users", USERS_STREAM, True),
    ("promocodes", PROMO_CODES_STREAM, True),
    ("orders", ORDERS_STREAM, False),
]


@pytest.mark.parametrize(("name", "stream", "limits"), PRODUCERS, ids=[p[0] for p in PRODUCERS])
async def test_a_producer_publishes_to_its_stream_only(
    server: RedisServer, admin: RedisClient, name: str, stream: str, limits: bool
) -> None:
    client = as_user(server, name)
    try:
        assert await client.ping()  # the health probe
        publisher = RedisStreamPublisher(client)
        event = OutboxEntry(f"e-{uuid.uuid4().hex}", "promo.v1.Test", stream, b"x")
        before = await admin.xlen(stream)
        await publisher.publish([event])
        await publisher.publish([event])  # a relay's retry: the marker, no second entry
        assert await admin.xlen(stream) == before + 1

        if limits:  # the rate limits' scripts and the lock-out's clearing
            limiter = RedisLimiter(client)
            key = bucket_key("test", uuid.uuid4().hex)
            assert await limiter.take(key, rate=1.0, burst=1) == 0
            assert await limiter.take(key, rate=1.0, burst=1) > 0
            backoff = Backoff("login", str, frozenset({"X"}), free=0)
            await limiter.fail(key, backoff)
            assert await limiter.blocked_for(key) > 0
            await limiter.succeed(key)
            assert await limiter.blocked_for(key) == 0
        else:
            with pytest.raises(redis.exceptions.NoPermissionError):
                await client.hset(bucket_key("test", "x"), "tokens", "1")

        info = await admin.info("server")
        if tuple(int(p) for p in str(info["redis_version"]).split(".")[:2]) < (7, 2):
            with pytest.raises(redis.exceptions.NoPermissionError):
                await publisher.durable()  # CONFIG GET: the module docstring says why
        else:
            await publisher.durable()
        # As the local stack configures it: the operator states appendfsync always, the
        # check reads INFO persistence only (on 7.2+, WAITAOF either way).
        await RedisStreamPublisher(client, appendfsync_always=True).durable()

        others = [s for _, s, _ in PRODUCERS if s != stream]
        for other in others:
            with pytest.raises(redis.exceptions.NoPermissionError):
                await client.xadd(other, {"event_id": "forged"})
        for forbidden in (("CONFIG", "GET", "requirepass"), ("FLUSHALL",), ("KEYS", "*")):
            with pytest.raises(redis.exceptions.NoPermissionError):
                await client.execute_command(*forbidden)
    finally:
        await client.aclose()


async def test_sync_consumer_runs_its_whole_stream_protocol(
    server: RedisServer, admin: RedisClient
) -> None:
    """Join, read, claim, acknowledge, count failures, dead-letter, replay, trim, status, the
    rebuild gate and a rebuild's stream reset: each as the consumer's user."""
    client = as_user(server, "sync-consumer")
    stream = f"promo.events.acl-{uuid.uuid4().hex[:6]}"
    group = f"g-{uuid.uuid4().hex[:6]}"
    try:
        assert await client.ping()
        for n in range(3):
            await admin.xadd(stream, {"event_id": f"e{n}"})
        consumer = RedisConsumerGroup(client, stream, group, "c1")
        await consumer.join()
        entries = await consumer.read(count=10, block_ms=100)
        assert len(entries) == 3
        claimed, _ = await RedisConsumerGroup(client, stream, group, "c2").claim(0, 10)
        assert len(claimed) == 3

        failures = RedisFailureCounter(client)
        assert (await failures.record(claimed[:1]))[claimed[0].entry_id] == 1
        await failures.forget(claimed[:1])
        await RedisDeadLetters(client, group).send([DeadLetter(claimed[0], "refused")])
        await consumer.ack(claimed[1:])
        assert await admin.xlen(dead_letter_stream(stream)) == 1
        assert await replay_dead_letters(client, stream) == 1
        assert await admin.xlen(dead_letter_stream(stream)) == 0

        status = await consumer.status()
        assert status is not None
        await consumer.trim(retention_ms=0)

        gate = RedisRebuildGate(client, group, stream, "c1")
        assert await gate.enter() in (True, False)
        await gate.leave()
        hold = RebuildHold(client, group, ttl_ms=5_000)
        await hold.take()
        await hold.wait_idle(timeout_seconds=5)  # the gate was left: no one inside a batch
        await hold.confirm()  # HoldLost if its script were refused
        await hold.release(swapped=True)
        assert await gate.enter() is True  # the swap bumped the generation the gate sees
        await gate.leave()

        await client.xinfo_stream(stream)  # what a rebuild reads, then resets
        await client.delete(stream)
        assert await admin.exists(stream) == 0

        # The rebuild's replays run as this user (sync_consumer.rebuild): they publish into
        # the rebuild's own streams, which it then reads and deletes.
        rebuild_stream = f"promo.rebuild.{uuid.uuid4().hex[:6]}.users_service"
        replay = RedisStreamPublisher(client, dedupe_ttl_seconds=600)
        await replay.publish([OutboxEntry("e-1", "promo.v1.Test", rebuild_stream, b"x")])
        assert len(await client.xrange(rebuild_stream)) == 1
        await client.delete(rebuild_stream)

        with pytest.raises(redis.exceptions.NoPermissionError):
            await client.set("rl:{test:x}", "1")  # the producers' buckets are not its keys
        for forbidden in (("CONFIG", "GET", "requirepass"), ("FLUSHALL",)):
            with pytest.raises(redis.exceptions.NoPermissionError):
                await client.execute_command(*forbidden)
    finally:
        await client.aclose()


def test_the_rules_come_from_the_manifest_file() -> None:
    manifest = Path(__file__).resolve().parents[2] / "deploy/k8s/overlays/dev/redis.yaml"
    assert "--user" in manifest.read_text()


async def test_the_durability_statement_is_checked_against_the_append_only_file(
    server: RedisServer, admin: RedisClient
) -> None:
    """REDIS_APPENDFSYNC_ALWAYS is not taken blindly: with the append-only file off, the
    events are not known durable (on 7.0; 7.2+ proves it with WAITAOF)."""
    if redis_version(_redis_server()) >= (7, 2):
        pytest.skip("Redis 7.2+: WAITAOF, the statement is not used")
    client = as_user(server, "users")
    await admin.config_set("appendonly", "no")
    try:
        with pytest.raises(NotDurable, match="append-only file is off"):
            await RedisStreamPublisher(client, appendfsync_always=True).durable()
    finally:
        await admin.config_set("appendonly", "yes")
        await client.aclose()


def _redis_server() -> str:
    found = shutil.which("redis-server") or shutil.which("redis-server", path="/usr/bin")
    assert found is not None
    return found


def test_devstack_runs_the_rendered_rules() -> None:
    """The local stack's rules are read from the manifest file, and are the rendered dev
    overlay's (kustomize changes nothing in them), less only what this Redis does not know."""
    rendered = {name: [t for t in tokens if t != f">{PASSWORD}"] for name, tokens in RULES.items()}
    assert manifest_rules() == rendered
    local = local_rules(redis_version(_redis_server()))
    for name, tokens in rendered.items():
        assert set(tokens) - set(local[name]) <= NEWER_THAN_LOCAL, name


def test_the_stack_redis_refuses_a_client_without_a_password(stack: Stack) -> None:
    if not stack.is_managed("redis"):
        pytest.skip("a Redis from the environment is used as given")
    with (
        redis.Redis(host=stack.redis_host, port=stack.redis_port) as anonymous,
        pytest.raises(redis.exceptions.AuthenticationError),
    ):
        anonymous.ping()
    with (
        redis.Redis(
            host=stack.redis_host, port=stack.redis_port, password="not the password"
        ) as wrong,
        pytest.raises(redis.exceptions.AuthenticationError),
    ):
        wrong.ping()
    users = RedisUsers(stack.state_dir)
    assert stat.S_IMODE(users.file.stat().st_mode) == 0o600
    config = (stack.state_dir / "redis" / "users.conf").read_text()
    for password in users.passwords().values():  # hashes only in the server's configuration
        assert password not in config


async def test_each_service_of_the_stack_logs_in_as_its_own_user(stack: Stack) -> None:
    """What Stack.service gives a service: its own user and password (never the
    administrator's); a workload without a Redis user gets no credentials at all."""
    if not stack.is_managed("redis"):
        pytest.skip("a Redis from the environment is used as given")
    admin_password = stack.redis_password
    for module, user in (
        ("users_service", "users"),
        ("promocodes_service", "promocodes"),
        ("orders_service", "orders"),
        ("sync_consumer", "sync-consumer"),
    ):
        # Made, not started; sync_consumer with a command that is not serving (no migration).
        argv = [
            sys.executable,
            "-m",
            module,
            *(["replay-dead-letters"] if "sync" in module else []),
        ]
        env = stack.service(f"acl-{user}", argv, free_port()).env
        assert env["REDIS_USERNAME"] == user and env["REDIS_PASSWORD"] != admin_password
        client = redis_client(
            RedisSettings(
                redis_host=stack.redis_host,
                redis_port=stack.redis_port,
                redis_username=env["REDIS_USERNAME"],
                redis_password=SecretStr(env["REDIS_PASSWORD"]),
            )
        )
        try:
            assert await client.ping()  # logged in as that user (ACL WHOAMI is not its)
            with pytest.raises(redis.exceptions.NoPermissionError):
                await client.execute_command("CONFIG", "GET", "appendfsync")
        finally:
            await client.aclose()
    analytics = stack.service("acl-analytics", [sys.executable, "-m", "analytics_service"], 1)
    assert "REDIS_USERNAME" not in analytics.env
    assert analytics.env.get("REDIS_PASSWORD") in (None, "")
