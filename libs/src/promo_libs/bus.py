"""The event bus on Redis Streams: the entry format, the publisher port and its Redis adapter.

One stream per producing service (promo_libs.events names them). An entry has three fields:
`event_id`, `type` and `envelope` (the serialized promo.v1.EventEnvelope, raw bytes). Any Redis
client can read that; sync-consumer reads it with redis-py (sync_consumer.adapters.redis_streams).

Publishing is idempotent by event_id: a Lua script (atomic in Redis, and persisted as one unit
in the append-only file) records `promo:published:{<stream>}:<event_id>` with SET NX and only
then XADDs (the marker's hash tag is the stream's name, so on Redis Cluster both keys of the
script share the stream's slot; a stream named without braces hashes its whole name),
so the relay can publish an entry again after a crash, or two relays can race on one document,
and the stream still holds each event once. The marker expires after `dedupe_ttl_seconds`,
which only has to outlive the time between a publish and the clearing of its outbox entry.

The publisher uses redis-py directly rather than FastStream's publisher: the fields above are
the contract (not FastStream's framing of a payload with JSON headers), and the SET NX + XADD
pair must be one atomic script, which FastStream's publish API cannot express.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeAlias

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import SSLConnection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from promo_libs.config import RedisSettings, file_stamp
from promo_libs.outbox import OutboxEntry

EVENT_ID_FIELD = b"event_id"
TYPE_FIELD = b"type"
ENVELOPE_FIELD = b"envelope"
DEDUPE_PREFIX = "promo:published:"

_PUBLISH_ONCE = """
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
  return redis.call('XADD', KEYS[2], '*', 'event_id', ARGV[2], 'type', ARGV[3], 'envelope', ARGV[4])
end
return false
"""


def dedupe_key(stream: str, event_id: str) -> str:
    """The publish-once marker, in the hash slot of `stream` (see the module doc)."""
    return f"{DEDUPE_PREFIX}{{{stream}}}:{event_id}"


class NotDurable(Exception):
    """The bus accepted events but cannot tell that they would survive a crash of its host."""


class EventPublisher(abc.ABC):
    @abc.abstractmethod
    async def publish(self, events: Sequence[OutboxEntry]) -> None:
        """Appends each event to its stream, in order, once per event_id; raises on failure."""

    @abc.abstractmethod
    async def durable(self) -> None:
        """Returns once every event this publisher published so far would survive a crash of
        the bus's host; raises NotDurable (or a connection error) when it cannot tell. The
        outbox relay clears an entry only after this returned (I3)."""


# A single server or a Redis Cluster: every command this project sends is the same on both
# (multi-key scripts and transactions name keys of one hash slot only).
RedisClient: TypeAlias = aioredis.Redis | RedisCluster


def redis_client(settings: RedisSettings, timeout_seconds: float = 2.0) -> RedisClient:
    """A client for the bus (bytes in, bytes out). Nothing connects until first use.

    With REDIS_CLUSTER=true, REDIS_HOST:REDIS_PORT is a seed node of a Redis Cluster and the
    client routes each command to the node owning its key's slot.
    """
    password = settings.redis_password.get_secret_value() if settings.redis_password else None
    # One quick retry (a pooled connection that died with a Redis restart); callers have
    # their own retry loops, so the default's seconds of backoff would only delay them.
    retry = Retry(ExponentialBackoff(cap=0.2, base=0.05), 1)
    options: dict[str, Any] = {
        "host": settings.redis_host,
        "port": settings.redis_port,
        "username": settings.redis_username,
        "password": password,
        "socket_timeout": timeout_seconds,
        "socket_connect_timeout": timeout_seconds,
        "retry": retry,
    }
    tls: dict[str, Any] = {}
    if settings.redis_tls:
        tls = {
            "ssl_cert_reqs": "required",
            "ssl_check_hostname": True,
            "ssl_ca_certs": _path(settings.redis_tls_ca_file),
            "ssl_certfile": _path(settings.redis_tls_cert_file),
            "ssl_keyfile": _path(settings.redis_tls_key_file),
        }
    if settings.redis_cluster:
        # redis-py's cluster client picks its own connection class: its connections keep the
        # files read at their first connect (rotation needs a restart there).
        return RedisCluster(**options, **({"ssl": True, **tls} if tls else {}))
    if not tls:
        return aioredis.Redis(**options)
    # The same options, on connections that follow certificate rotation.
    pool = aioredis.ConnectionPool(connection_class=_RereadingSSLConnection, **options, **tls)
    return aioredis.Redis(connection_pool=pool)


class _RereadingSSLConnection(SSLConnection):
    """An SSLConnection that reads its certificate files again when they change, so that a
    rotated client certificate (or CA bundle) is used from the next (re)connect on, without a
    restart. redis-py builds a connection's TLS context once and keeps it for good."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        context = self.ssl_context
        self._files = [Path(f) for f in (context.certfile, context.keyfile, context.ca_certs) if f]
        self._stamp = file_stamp(*self._files)

    def _connection_arguments(self) -> Mapping[str, Any]:
        stamp = file_stamp(*self._files)
        if stamp != self._stamp:
            self.ssl_context.context = None  # RedisSSLContext.get() builds it again
            self._stamp = stamp
        return super()._connection_arguments()


def _path(path: Path | None) -> str | None:
    return None if path is None else str(path)


class RedisStreamPublisher(EventPublisher):
    def __init__(
        self,
        client: RedisClient,
        dedupe_ttl_seconds: int = 7 * 24 * 3600,
        durable_timeout_seconds: float = 2.0,
        *,
        appendfsync_always: bool = False,
    ) -> None:
        self._client = client
        # RedisSettings.redis_appendfsync_always: the operator says the server fsyncs every
        # write, for a Redis < 7.2 whose ACL user may not run CONFIG GET to see it.
        self._appendfsync_always = appendfsync_always
        self._ttl = dedupe_ttl_seconds
        self._script = client.register_script(_PUBLISH_ONCE)
        self._durable_timeout_ms = int(durable_timeout_seconds * 1000)
        self._mode: str | None = None

    async def publish(self, events: Sequence[OutboxEntry]) -> None:
        for event in events:  # in order: the stream order of one aggregate is its version order
            await self._script(
                keys=[dedupe_key(event.stream, event.event_id), event.stream],
                args=[self._ttl, event.event_id, event.event_type, event.envelope],
            )

    # Durability (I3). With `appendfsync everysec` Redis acknowledges an XADD before it is on
    # disk: a host crash (not a process kill, whose page cache survives) loses about a second
    # of acknowledged events with their de-duplication markers. So the relay asks, before it
    # clears an outbox entry, whether what it published is durable:
    # - Redis >= 7.2: WAITAOF 1 0 returns once the local append-only file is fsynced up to
    #   this connection's writes (any appendfsync; with everysec it costs up to a second of
    #   latency per pass, not per event: the relay waits once per page of documents);
    # - older Redis with `appendonly yes` and `appendfsync always`: every write is fsynced
    #   before its reply, so a reply is proof. Read with CONFIG GET, which an ACL user should
    #   not be granted (it reads every setting, requirepass included): there, the operator
    #   states `appendfsync always` (REDIS_APPENDFSYNC_ALWAYS, the local stack does), and the
    #   probe only checks with INFO (allowed) that the append-only file is on;
    # - anything else: NotDurable. The entries stay and are republished (de-duplicated) until
    #   the server is configured durably: a loud failure instead of a silent loss.
    # Decided once per connection pool from INFO/CONFIG; a restart of Redis with another
    # configuration is seen by the next process start (or by `reset_durability`).
    async def durable(self) -> None:
        mode = self._mode or await self._probe()
        if mode == "waitaof":
            local, _ = await self._client.waitaof(1, 0, self._durable_timeout_ms)
            if local < 1:
                raise NotDurable("WAITAOF: the append-only file was not fsynced in time")
            return
        if mode != "always":
            raise NotDurable(mode)

    def reset_durability(self) -> None:
        self._mode = None

    async def _probe(self) -> str:
        if isinstance(self._client, RedisCluster):
            return await self._probe_cluster(self._client)
        info = await self._client.info("server")
        version = tuple(int(p) for p in str(info.get("redis_version", "0")).split(".")[:2])
        if version >= (7, 2):
            self._mode = "waitaof"
            return self._mode
        if self._appendfsync_always:
            persistence = await self._client.info("persistence")
            if str(persistence.get("aof_enabled")) == "1":
                self._mode = "always"
                return self._mode
            return (
                f"Redis {info.get('redis_version')} has no WAITAOF and its append-only file is "
                "off, though REDIS_APPENDFSYNC_ALWAYS says it fsyncs every write: published "
                "events are not known durable"
            )
        values = await _fsync_config(self._client)
        if values == ("yes", "always"):
            self._mode = "always"
            return self._mode
        # Not cached: a server reconfigured with CONFIG SET is picked up by the next pass.
        return (
            f"Redis {info.get('redis_version')} has no WAITAOF and runs appendonly="
            f"{values[0]} appendfsync={values[1]}: published "
            "events are not known durable (set appendfsync always, or use Redis 7.2+)"
        )

    async def _probe_cluster(self, cluster: RedisCluster) -> str:
        """On a Redis Cluster only `appendfsync always` on every primary is proof. INFO, CONFIG
        GET and WAITAOF go to one default node, and WAITAOF only covers the writes of its own
        connection, while the client sent each XADD over the connection to its slot's master:
        so each primary's configuration is asked, and WAITAOF is never used."""
        loose = []
        for node in cluster.get_primaries():
            values = await _fsync_config(cluster, node)
            if values != ("yes", "always"):
                loose.append(f"{node.name} appendonly={values[0]} appendfsync={values[1]}")
        if not loose:
            self._mode = "always"
            return self._mode
        return (
            "Redis Cluster primaries without appendonly yes and appendfsync always ("
            + ", ".join(loose)
            + "): published events are not known durable (WAITAOF cannot prove it on a cluster)"
        )


async def _fsync_config(client: RedisClient, node: object | None = None) -> tuple[str, str]:
    """(appendonly, appendfsync) of a single server, or of one node of a cluster."""
    target = {} if node is None else {"target_nodes": node}
    config = dict(await client.config_get("appendonly", **target))
    config.update(await client.config_get("appendfsync", **target))
    values = {_text(k): _text(v) for k, v in config.items()}
    return values.get("appendonly", "?"), values.get("appendfsync", "?")


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
