"""A crashed Redis host (I3, issue 12): every event committed in MongoDB reaches ClickHouse.

Two replicas of each producer (promocodes, orders) and the sync-consumer publish and read under
load through a TCP proxy in front of Redis. Redis is SIGKILLed at a moment of the load, its
append-only file is cut the way a host crash cuts it, and it is restarted; after the load the
pipeline must drain to `reconcile` finding no difference.

Why this cut. A process kill loses nothing (the page cache keeps every write); a host crash
loses what was written but not yet fsynced. Which bytes those are depends on the durability
mode, and the relay clears an outbox entry only once its event is durable:
- with `appendfsync always` (the local Redis 7.0, which has no WAITAOF), Redis fsyncs the file
  before it sends any reply, so every acknowledged write is on disk and exactly the
  unacknowledged ones may be lost. The proxy sees every reply on its way to a client and, just
  before forwarding it, notes the file's size (at least the end of the acknowledged write). At
  the crash the file is cut back to the largest size noted: everything nobody was told about is
  gone -- the worst case the mode allows, no more (cutting an acknowledged write would model a
  disk that lies, not a host crash).
- with `everysec` the same cut would be too kind (acknowledged writes of the last second are
  lost too); the test refuses to run in a mode it does not model.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
import redis
from pipeline_support import (
    COMMON,
    LIVE_STREAMS,
    Clients,
    LoadProcess,
    Platform,
    make_load,
    until_reconciled,
)

from devstack.ports import free_port
from devstack.service import ServiceProcess
from devstack.stack import Stack
from promo.v1 import orders_pb2_grpc, promo_codes_pb2_grpc, users_pb2_grpc
from promo_libs.events import ORDERS_STREAM

pytestmark = pytest.mark.e2e

DRAIN_SECONDS = 240.0
CRASHES = 3
MAX_CRASHES = 10


class AckProxy:
    """TCP proxy to Redis that notes the append-only file's size before forwarding each reply."""

    def __init__(self, redis_port: int, aof: Path) -> None:
        self.port = free_port()
        self._redis_port = redis_port
        self._aof = aof
        self.acknowledged = 0  # bytes of the file every forwarded reply is covered by
        self._crashed = False
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self._drop_connections()

    def crash(self) -> int:
        """From now on no reply reaches anyone; returns the acknowledged size at this moment."""
        self._crashed = True
        return self.acknowledged

    def recovered(self, aof: Path) -> None:
        self._drop_connections()
        self._aof = aof
        self.acknowledged = aof.stat().st_size
        self._crashed = False

    def _drop_connections(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._crashed:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._redis_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        await asyncio.gather(
            self._pump(reader, up_writer, replies=False),
            self._pump(up_reader, writer, replies=True),
            return_exceptions=True,
        )
        for w in (writer, up_writer):
            w.transport.abort()
            self._writers.discard(w)

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, replies: bool
    ) -> None:
        while True:
            chunk = await reader.read(65536)
            if not chunk or self._crashed:
                writer.transport.abort()
                return
            if replies:
                # No await between the size and the write: the reply leaves covered by it.
                self.acknowledged = max(self.acknowledged, self._aof.stat().st_size)
            writer.write(chunk)
            await writer.drain()


def incr_file(redis_dir: Path) -> Path:
    """The multi-part AOF's last incremental file (Redis 7.0 `appenddirname`)."""
    directory = redis_dir / "appendonlydir"
    manifest = next(directory.glob("*.manifest")).read_text().split("\n")
    names = [line.split()[1] for line in manifest if line.endswith("type i")]
    return directory / names[-1]


def xadds_in(data: bytes) -> int:
    """XADD commands in a stretch of the file (RESP: `$4\\r\\nXADD\\r\\n`)."""
    return data.upper().count(b"$4\r\nXADD\r\n")


def start(stack: Stack, token: str, redis_port: int) -> tuple[Platform, list[ServiceProcess]]:
    via_proxy = {**COMMON, "REDIS_PORT": str(redis_port)}
    db = {"u": f"pipe_u_{token}", "p": f"pipe_p_{token}", "o": f"pipe_o_{token}"}

    def service(name: str, module: str, env: dict[str, str]) -> ServiceProcess:
        return stack.service(
            f"{name}-{token}", [sys.executable, "-m", module], free_port(), {**via_proxy, **env}
        )

    users = service(
        "users",
        "users_service",
        {
            "MONGODB_DB_NAME": db["u"],
            "ARGON2_MEMORY_KIB": "8192",
            "ARGON2_TIME_COST": "1",
            "ARGON2_PARALLELISM": "1",
        },
    )
    promocodes = [
        service(f"promocodes{n}", "promocodes_service", {"MONGODB_DB_NAME": db["p"]})
        for n in (1, 2)
    ]
    for replica in promocodes:
        replica.env["USERS_ADDR"] = users.address
    orders = [
        service(
            f"orders{n}",
            "orders_service",
            {
                "MONGODB_DB_NAME": db["o"],
                "USERS_ADDR": users.address,
                "PROMOCODES_ADDR": promocodes[n - 1].address,
            },
        )
        for n in (1, 2)
    ]
    consumer_env = {
        **via_proxy,
        "CLICKHOUSE_DATABASE": f"pipe_{token}",
        "CONSUMER_GROUP": f"sync-{token}",
        "CONSUMER_NAME": "sync-1",
        "BATCH_SIZE": "1000",
        "BATCH_WAIT_MS": "200",
        "CLAIM_IDLE_MS": "2000",
    }
    consumer = service("sync-consumer", "sync_consumer", consumer_env)
    everything = [users, *promocodes, *orders, consumer]
    for process in everything:
        process.start_and_wait()
    platform = Platform(stack, token, users, promocodes[0], orders[0], consumer, consumer_env)
    return platform, everything


@pytest.fixture(scope="module")
def direct(stack: Stack) -> Iterator[redis.Redis]:
    client = redis.Redis(
        host=stack.redis_host, port=stack.redis_port, password=stack.redis_password
    )
    yield client
    client.close()


@pytest_asyncio.fixture(loop_scope="session")
async def proxy(stack: Stack) -> AsyncIterator[AckProxy]:
    running = AckProxy(stack.redis_port, incr_file(stack.managed_server("redis").dir))
    await running.start()
    yield running
    await running.close()


async def test_redis_host_crashes_under_load_lose_no_committed_event(
    stack: Stack, direct: redis.Redis, proxy: AckProxy
) -> None:
    if not stack.is_managed("redis"):
        pytest.fail("this test SIGKILLs Redis and cuts its files: it needs the managed one")
    mode = {_text(k): _text(v) for k, v in direct.config_get("append*").items()}
    assert mode.get("appendonly") == "yes" and mode.get("appendfsync") == "always", (
        f"the cut below models appendfsync always; this Redis runs {mode}"
    )
    direct.delete(*LIVE_STREAMS)
    redis_dir = stack.managed_server("redis").dir
    platform, processes = await asyncio.to_thread(start, stack, uuid.uuid4().hex[:8], proxy.port)
    try:
        async with (
            platform.users.channel() as users,
            platform.promocodes.channel() as codes,
            platform.orders.channel() as orders,
        ):
            load = await make_load(
                Clients(
                    users_pb2_grpc.UserServiceStub(users),
                    promo_codes_pb2_grpc.PromoCodeServiceStub(codes),
                    orders_pb2_grpc.OrderServiceStub(orders),
                )
            )
        second = dataclasses.replace(platform, promocodes=processes[2], orders=processes[4])
        works = [
            await LoadProcess(platform, load, 300, 6).start(),
            await LoadProcess(second, load, 300, 6).start(),
        ]
        cut_events = crashes = 0
        # At least CRASHES crashes, and more (up to MAX_CRASHES) until one of them cut an
        # unacknowledged XADD: otherwise the republishing this test is about was not exercised.
        while crashes < CRASHES or (cut_events == 0 and crashes < MAX_CRASHES):
            crashes += 1
            before = await asyncio.to_thread(_xlen, direct)

            async def progressed(seen: int = before) -> bool:
                return await asyncio.to_thread(_xlen, direct) >= seen + 40

            await _until(progressed, 120, "the load publishes order events")
            acknowledged = proxy.crash()
            await asyncio.to_thread(stack.kill_server, "redis")
            aof = incr_file(redis_dir)
            data = aof.read_bytes()
            assert len(data) >= acknowledged  # a reply is never ahead of the file
            cut_events += xadds_in(data[acknowledged:])
            os.truncate(aof, acknowledged)
            await asyncio.to_thread(stack.start_server, "redis")
            proxy.recovered(incr_file(redis_dir))
        for work in works:
            await work.wait()
        assert cut_events > 0, f"no crash of {crashes} cut an unacknowledged XADD"
        took = await until_reconciled(platform, DRAIN_SECONDS)
        print(f"\n{cut_events} unacknowledged XADDs cut, {crashes} crashes; drained {took:.1f}s")
    finally:
        for process in reversed(processes):
            with contextlib.suppress(Exception):
                await asyncio.to_thread(process.terminate)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _xlen(client: redis.Redis) -> int:
    try:
        return int(client.xlen(ORDERS_STREAM))
    except redis.RedisError:
        return 0


async def _until(check: object, within: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    give_up = loop.time() + within
    while not await check():  # type: ignore[operator]
        if loop.time() > give_up:
            raise AssertionError(f"not reached within {within:.0f}s: {what}")
        await asyncio.sleep(0.1)
