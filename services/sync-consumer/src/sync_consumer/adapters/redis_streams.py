"""The Redis side of the pipeline, apart from reading (FastStream does that): groups, claims,
acknowledgements, dead letters, failure counts, replays and trimming.

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
    Position,
    StreamEntry,
    format_position,
    parse_position,
)
from sync_consumer.domain.ports import DeadLetterQueue, FailureCounter


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


async def ensure_group(client: RedisClient, stream: str, group: str) -> bool:
    """Creates the group from id 0 (not `$`: events published before it must be delivered too).

    True when it was created now.
    """
    try:
        await client.xgroup_create(stream, group, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise
        return False
    return True


async def group_info(client: RedisClient, stream: str, group: str) -> dict[str, Any] | None:
    try:
        groups = await client.xinfo_groups(stream)
    except ResponseError:  # no such key: the stream is gone (Redis lost it, or it was deleted)
        return None
    for info in groups:
        name = info["name"]
        if (name.decode() if isinstance(name, bytes) else name) == group:
            return dict(info)
    return None


async def claim(
    client: RedisClient,
    stream: str,
    group: str,
    consumer: str,
    min_idle_ms: int,
    count: int,
    start: str = "0-0",
) -> tuple[list[StreamEntry], str]:
    """XAUTOCLAIM one page of entries idle for `min_idle_ms`, with their delivery counts."""
    reply = await client.xautoclaim(stream, group, consumer, min_idle_ms, start, count=count)
    next_start = reply[0].decode() if isinstance(reply[0], bytes) else str(reply[0])
    claimed = [(entry_id, fields) for entry_id, fields in reply[1] if fields is not None]
    if not claimed:
        return [], next_start
    ids = [entry_id.decode() for entry_id, _ in claimed]
    pending = await client.xpending_range(
        stream, group, min=ids[0], max=ids[-1], count=len(ids) * 2 + 10
    )
    deliveries = {_text(p["message_id"]): int(p["times_delivered"]) for p in pending}
    entries = [
        StreamEntry(stream, entry_id, fields, deliveries.get(entry_id, 1))
        for entry_id, (_, fields) in zip(ids, claimed, strict=True)
    ]
    return entries, next_start


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


async def safe_trim_point(client: RedisClient, stream: str) -> Position | None:
    """The lowest id any group of the stream still needs (pending, or not yet delivered)."""
    try:
        groups = await client.xinfo_groups(stream)
    except ResponseError:
        return None
    if not groups:
        return None  # nobody has read it yet: keep everything
    needed: list[Position] = []
    for info in groups:
        name = info["name"]
        summary = await client.xpending(stream, name)
        if summary["pending"]:
            needed.append(parse_position(summary["min"]))
        else:
            needed.append(parse_position(info["last-delivered-id"]))
    return min(needed)


async def trim(client: RedisClient, stream: str, retention_ms: int) -> int:
    """Drops entries below what every group still needs and older than `retention_ms`.

    XTRIM MINID deletes even entries a group has pending (Redis < 8.2 has no ACKED mode), so the
    point comes from the groups' pending lists and delivery positions, never from length.
    """
    point = await safe_trim_point(client, stream)
    if point is None:
        return 0
    keep_from = min(point, (int(time.time() * 1000) - retention_ms, 0))
    if keep_from <= (0, 0):
        return 0
    return int(await client.xtrim(stream, minid=format_position(keep_from)))
