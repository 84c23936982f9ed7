"""The Redis side of the pipeline, apart from reading (FastStream does that): groups, claims,
acknowledgements, dead letters and trimming."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from sync_consumer.domain.model import (
    DeadLetter,
    Position,
    StreamEntry,
    format_position,
    parse_position,
)
from sync_consumer.domain.ports import DeadLetterQueue


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def dead_letter_stream(stream: str) -> str:
    return f"{stream}.dead-letter"


async def ensure_group(client: aioredis.Redis, stream: str, group: str) -> bool:
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


async def group_info(client: aioredis.Redis, stream: str, group: str) -> dict[str, Any] | None:
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
    client: aioredis.Redis,
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
    """XADD to `<stream>.dead-letter`: the original fields plus where it came from and why."""

    def __init__(self, client: aioredis.Redis) -> None:
        self._client = client

    async def send(self, letters: Sequence[DeadLetter]) -> None:
        async with self._client.pipeline(transaction=True) as pipe:
            for letter in letters:
                entry = letter.entry
                fields: dict[Any, Any] = {
                    **{
                        f"original.{k.decode(errors='replace')}": v for k, v in entry.fields.items()
                    },
                    "reason": letter.reason,
                    "source_stream": entry.stream,
                    "source_id": entry.entry_id,
                    "deliveries": entry.deliveries,
                    "dead_at_ms": int(time.time() * 1000),
                }
                pipe.xadd(dead_letter_stream(entry.stream), fields)
            await pipe.execute()


async def safe_trim_point(client: aioredis.Redis, stream: str) -> Position | None:
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


async def trim(client: aioredis.Redis, stream: str, retention_ms: int) -> int:
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
