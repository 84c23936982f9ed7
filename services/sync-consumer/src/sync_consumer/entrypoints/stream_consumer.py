"""Reading the streams: FastStream's RedisBroker subscribers, plus the loops FastStream lacks.

Per stream, in this order:
1. the group is created explicitly from id 0 (a group FastStream creates starts at `$`, and
   events published before it existed would never be delivered);
2. recovery claims every entry still pending in the group (a killed predecessor's batch) and
   hands it to the pipeline before anything new is read, keeping the stream's order;
3. a batch subscriber (XREADGROUP `>`, up to `batch_size` entries or `poll_ms` of waiting) hands
   each batch to the pipeline and acknowledges it only after the pipeline stored it (ack policy
   MANUAL: FastStream's ACK would acknowledge even when the handler raised);
4. a claim loop (XAUTOCLAIM) takes entries idle longer than `claim_idle_ms` (a consumer that
   died or hangs) through the same pipeline; their delivery counts, which every claim raises,
   are kept in a dead letter for information only (the pipeline counts failures instead);
5. a maintenance loop exports lag and pending counts, trims below what every group still
   needs, and recreates the group from 0 if Redis lost it (NOGROUP stops a subscriber).

The subscriber is a translator only: raw entries in, the pipeline's verdict out.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from faststream import AckPolicy
from faststream.redis import RedisBroker, StreamSub
from faststream.redis.annotations import RedisBatchStreamMessage

from promo_libs.bus import RedisClient
from promo_libs.logging import get_logger
from sync_consumer.adapters import redis_streams
from sync_consumer.adapters.metrics import BATCH_SIZE, DEAD_LETTERS, EVENTS, LAG, PENDING
from sync_consumer.domain.model import StreamEntry
from sync_consumer.service_layer.pipeline import StreamPipeline

log = get_logger(__name__)


async def _keep_raw(message: Mapping[str, Any], original: Any) -> Any:
    """FastStream's batch parser JSON-encodes every field value, which fails on protobuf bytes;
    give it empty bodies and keep the raw entries on the message for the handler."""
    parsed = await original({**message, "data": [{} for _ in message["data"]]})
    parsed.raw_message = message
    return parsed


class StreamConsumer:
    def __init__(
        self,
        broker: RedisBroker,
        client: RedisClient,
        pipeline: StreamPipeline,
        *,
        group: str,
        consumer: str,
        batch_size: int,
        poll_ms: int,
        claim_idle_ms: int,
        retention_ms: int,
    ) -> None:
        self.stream = pipeline.stream
        self._broker = broker
        self._client = client
        self._pipeline = pipeline
        self._group = group
        self._consumer = consumer
        self._batch_size = batch_size
        self._claim_idle_ms = claim_idle_ms
        self._retention_ms = retention_ms
        self.subscriber = broker.subscriber(
            stream=StreamSub(
                self.stream,
                group=group,
                consumer=consumer,
                batch=True,
                max_records=batch_size,
                polling_interval=poll_ms,
            ),
            ack_policy=AckPolicy.MANUAL,
            parser=_keep_raw,
        )
        self.subscriber(self._on_batch)

    async def _on_batch(self, body: Any, message: RedisBatchStreamMessage) -> None:
        raw = message.raw_message
        entries = [
            StreamEntry(self.stream, entry_id.decode(), fields)
            for entry_id, fields in zip(raw["message_ids"], raw["data"], strict=True)
        ]
        await self._store(entries)
        await message.ack()

    async def _store(self, entries: list[StreamEntry]) -> None:
        BATCH_SIZE.labels(self.stream).observe(len(entries))
        letters = await self._pipeline.handle(entries)
        if letters:
            DEAD_LETTERS.labels(self.stream).inc(len(letters))
            for letter in letters:
                log.warning(
                    "dead-lettered",
                    stream=self.stream,
                    id=letter.entry.entry_id,
                    reason=letter.reason,
                )
        EVENTS.labels(self.stream, "dead_letter").inc(len(letters))
        EVENTS.labels(self.stream, "stored").inc(len(entries) - len(letters))

    async def prepare(self) -> None:
        """Before the subscriber starts: the group from 0, then whatever is still pending."""
        await redis_streams.ensure_group(self._client, self.stream, self._group)
        await self.claim_pass(min_idle_ms=0)

    async def claim_pass(self, min_idle_ms: int) -> int:
        start = "0-0"
        claimed = 0
        while True:
            entries, start = await redis_streams.claim(
                self._client,
                self.stream,
                self._group,
                self._consumer,
                min_idle_ms,
                self._batch_size,
                start,
            )
            if entries:
                await self._store(entries)
                await self._client.xack(self.stream, self._group, *[e.entry_id for e in entries])
                claimed += len(entries)
            if start == "0-0":
                return claimed

    async def claim_loop(self) -> None:
        while True:
            await asyncio.sleep(self._claim_idle_ms / 2000)
            try:
                if claimed := await self.claim_pass(self._claim_idle_ms):
                    log.info("claimed idle entries", stream=self.stream, count=claimed)
            except Exception as exc:
                log.warning("claim pass failed", stream=self.stream, error=str(exc))

    async def maintenance_loop(self, interval: float = 2.0) -> None:
        while True:
            try:
                await self._maintain()
            except Exception as exc:
                log.warning("stream maintenance failed", stream=self.stream, error=str(exc))
            await asyncio.sleep(interval)

    async def _maintain(self) -> None:
        info = await redis_streams.group_info(self._client, self.stream, self._group)
        if info is None or not self.subscriber.running:
            log.warning("consumer group or subscriber lost; recreating", stream=self.stream)
            await self.subscriber.stop()
            await self.prepare()
            await self.subscriber.start()
            return
        LAG.labels(self.stream).set(float(info.get("lag") or 0))
        PENDING.labels(self.stream).set(float(info.get("pending") or 0))
        await redis_streams.trim(self._client, self.stream, self._retention_ms)
