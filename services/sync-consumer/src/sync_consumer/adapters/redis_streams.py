"""All of the pipeline's Redis: the consumer group (joining, reading, claiming, acknowledging,
trimming), dead letters, failure counts and replays, on the one redis-py client that the
composition root gives every adapter (promo_libs.bus.redis_client, Redis Cluster included).

Why redis-py and not FastStream's subscriber (DESIGN.md, "Event bus"): a group FastStream creates
starts at `$`; its batch parser JSON-decodes every field and fails on protobuf bytes; a
subscriber given `min_idle_time` only claims and never reads; its ACK policy acknowledges
even when the handler raised, and NOGROUP stops it for good. Working around all of that needed
raw commands on a second client beside it anyway (groups, XAUTOCLAIM, XACK, XTRIM). One client
that reads with XREADGROUP makes every one of those decisions explicit, in one place.

Keys beside a stream `s` are named `{s}.<what>`: on Redis Cluster a key's slot comes from the
part in braces, and a stream named without braces hashes its whole name, so `{s}.dead-letter`
and `{s}.failures` share the slot of `s` itself. That is what lets one script add a letter and
acknowledge its entry, or put a letter back on its stream and delete it, atomically on a
cluster as on a single server (a script's keys must share one slot, or it fails CROSSSLOT).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from redis.exceptions import ResponseError

from promo_libs.bus import RedisClient
from sync_consumer.domain.model import (
    DeadLetter,
    GroupLost,
    GroupStatus,
    Position,
    StreamEntry,
    format_position,
    parse_position,
)
from sync_consumer.domain.ports import ConsumerGroup, DeadLetterQueue, FailureCounter


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def dead_letter_stream(stream: str) -> str:
    return f"{{{stream}}}.dead-letter"


def failures_key(stream: str) -> str:
    return f"{{{stream}}}.failures"


# KEYS: dead-letter stream, source stream. ARGV: group, entry id, then the letter's fields.
# Only an entry still pending in the group is lettered: the claim loop may have handed the same
# entry to a second handle while the first was still isolating it (a refused batch takes its
# retries, backoffs and the sink's KILL-and-wait per refusal, easily more than claim_idle_ms),
# and an entry the first one already lettered and acknowledged must not be lettered again.
_DEAD_LETTER = """
if #redis.call('XPENDING', KEYS[2], ARGV[1], ARGV[2], ARGV[2], 1) == 0 then return 0 end
redis.call('XADD', KEYS[1], '*', unpack(ARGV, 3))
return redis.call('XACK', KEYS[2], ARGV[1], ARGV[2])
"""

# KEYS: dead-letter stream, source stream. ARGV: letter id. The entry goes back with its
# original fields under a new id, and the letter goes, in one step: each lands exactly once.
_REPLAY = """
local found = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #found == 0 then return false end
local fields, original = found[1][2], {}
for i = 1, #fields, 2 do
  if string.sub(fields[i], 1, 9) == 'original.' then
    table.insert(original, string.sub(fields[i], 10))
    table.insert(original, fields[i + 1])
  end
end
if #original == 0 then return false end
local id = redis.call('XADD', KEYS[2], '*', unpack(original))
redis.call('XDEL', KEYS[1], ARGV[1])
return id
"""


def _lost(exc: ResponseError) -> bool:
    return "NOGROUP" in str(exc)


class RedisConsumerGroup(ConsumerGroup):
    """XGROUP CREATE, XREADGROUP, XAUTOCLAIM, XACK and XTRIM for one stream and one consumer."""

    def __init__(self, client: RedisClient, stream: str, group: str, consumer: str) -> None:
        self.stream = stream
        self._client = client
        self._group = group
        self._consumer = consumer

    async def join(self) -> None:
        try:
            await self._client.xgroup_create(self.stream, self._group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def read(self, count: int, block_ms: int) -> list[StreamEntry]:
        try:
            reply = await self._client.xreadgroup(
                self._group, self._consumer, {self.stream: ">"}, count=count, block=block_ms
            )
        except ResponseError as exc:
            if _lost(exc):
                raise GroupLost(self.stream) from exc
            raise
        # RESP2 replies [[stream, [(id, fields), ...]]], RESP3 {stream: [...]}; one stream here.
        streams: Any = reply.items() if isinstance(reply, dict) else (reply or [])
        return [
            StreamEntry(self.stream, _text(entry_id), fields)
            for _, messages in streams
            for entry_id, fields in messages
            if fields is not None
        ]

    async def claim(
        self, min_idle_ms: int, count: int, cursor: str = "0-0"
    ) -> tuple[list[StreamEntry], str]:
        try:
            reply = await self._client.xautoclaim(
                self.stream, self._group, self._consumer, min_idle_ms, cursor, count=count
            )
        except ResponseError as exc:
            if _lost(exc):
                raise GroupLost(self.stream) from exc
            raise
        next_cursor = _text(reply[0])
        # Entries trimmed while pending come back without fields: nothing is left to store.
        claimed = [(_text(entry_id), fields) for entry_id, fields in reply[1] if fields is not None]
        if not claimed:
            return [], next_cursor
        # XAUTOCLAIM raised each one's delivery count; it is kept in a dead letter for
        # information only (the pipeline counts failures, not deliveries).
        pending = await self._client.xpending_range(
            self.stream,
            self._group,
            min=claimed[0][0],
            max=claimed[-1][0],
            count=len(claimed) * 2 + 10,
        )
        deliveries = {_text(p["message_id"]): int(p["times_delivered"]) for p in pending}
        entries = [
            StreamEntry(self.stream, entry_id, fields, deliveries.get(entry_id, 1))
            for entry_id, fields in claimed
        ]
        return entries, next_cursor

    async def ack(self, entries: Sequence[StreamEntry]) -> None:
        if entries:
            await self._client.xack(self.stream, self._group, *[e.entry_id for e in entries])

    async def status(self) -> GroupStatus | None:
        try:
            groups = await self._client.xinfo_groups(self.stream)
        except ResponseError:  # no such key: the stream is gone (Redis lost it, or it was deleted)
            return None
        for info in groups:
            if _text(info["name"]) == self._group:
                return GroupStatus(
                    lag=int(info.get("lag") or 0), pending=int(info.get("pending") or 0)
                )
        return None

    async def trim(self, retention_ms: int) -> int:
        """XTRIM MINID deletes even entries a group has pending (Redis < 8.2 has no ACKED mode),
        so the point comes from every group's pending list and delivery position, never from
        the stream's length."""
        point = await self._needed_from()
        if point is None:
            return 0
        keep_from = min(point, (int(time.time() * 1000) - retention_ms, 0))
        if keep_from <= (0, 0):
            return 0
        return int(await self._client.xtrim(self.stream, minid=format_position(keep_from)))

    async def _needed_from(self) -> Position | None:
        """The lowest id any group of the stream still needs (pending, or not yet delivered)."""
        try:
            groups = await self._client.xinfo_groups(self.stream)
        except ResponseError:
            return None
        if not groups:
            return None  # nobody has read it yet: keep everything
        needed: list[Position] = []
        for info in groups:
            summary = await self._client.xpending(self.stream, info["name"])
            if summary["pending"]:
                needed.append(parse_position(summary["min"]))
            else:
                needed.append(parse_position(info["last-delivered-id"]))
        return min(needed)


class RedisDeadLetters(DeadLetterQueue):
    """XADD to `{<stream>}.dead-letter` (the original fields plus where it came from and why)
    and XACK of the entry, in one script: a crash leaves it pending or dead-lettered once, and
    an entry no longer pending (acknowledged: lettered or stored already) gets no letter."""

    def __init__(self, client: RedisClient, group: str) -> None:
        self._group = group
        self._script = client.register_script(_DEAD_LETTER)

    async def send(self, letters: Sequence[DeadLetter]) -> None:
        for letter in letters:
            entry = letter.entry
            fields: list[Any] = [
                *(
                    part
                    for k, v in entry.fields.items()
                    for part in (f"original.{k.decode(errors='replace')}", v)
                ),
                "reason",
                letter.reason,
                "source_stream",
                entry.stream,
                "source_id",
                entry.entry_id,
                "deliveries",
                entry.deliveries,
                "dead_at_ms",
                int(time.time() * 1000),
            ]
            await self._script(
                keys=[dead_letter_stream(entry.stream), entry.stream],
                args=[self._group, entry.entry_id, *fields],
            )


class RedisFailureCounter(FailureCounter):
    """A hash `{<stream>}.failures`: entry id -> refused inserts so far, across restarts.

    Counts of entries later stored by another process are not deleted one by one; the hash
    expires `ttl_seconds` after its last failure instead.
    """

    def __init__(self, client: RedisClient, ttl_seconds: int = 7 * 24 * 3600) -> None:
        self._client = client
        self._ttl = ttl_seconds

    async def record(self, entries: Sequence[StreamEntry]) -> dict[str, int]:
        counts: dict[str, int] = {}
        by_stream: dict[str, list[StreamEntry]] = {}
        for entry in entries:
            by_stream.setdefault(entry.stream, []).append(entry)
        for stream, of_stream in by_stream.items():
            key = failures_key(stream)
            async with self._client.pipeline(transaction=True) as pipe:
                for entry in of_stream:
                    pipe.hincrby(key, entry.entry_id, 1)
                pipe.expire(key, self._ttl)
                replies = await pipe.execute()
            counts.update(
                {e.entry_id: int(n) for e, n in zip(of_stream, replies[:-1], strict=True)}
            )
        return counts

    async def forget(self, entries: Sequence[StreamEntry]) -> None:
        by_stream: dict[str, list[str]] = {}
        for entry in entries:
            by_stream.setdefault(entry.stream, []).append(entry.entry_id)
        for stream, ids in by_stream.items():
            await self._client.hdel(failures_key(stream), *ids)


async def replay_dead_letters(client: RedisClient, stream: str, batch: int = 500) -> int:
    """Puts every letter of `stream` back on it (new ids, original fields); returns how many.

    Run it once the cause is fixed. Each letter moves in one script (XADD to the stream, XDEL
    of the letter), so a crash or a second run never replays a letter twice.
    """
    script = client.register_script(_REPLAY)
    letters = dead_letter_stream(stream)
    replayed, start = 0, "-"
    while True:
        page: list[tuple[bytes, Any]] = (
            await client.xrange(letters, min=start, max="+", count=batch) or []  # type: ignore[assignment]
        )
        for letter_id, _ in page:
            if await script(keys=[letters, stream], args=[letter_id]) is not None:
                replayed += 1
        if len(page) < batch:
            return replayed
        start = "(" + _text(page[-1][0])
