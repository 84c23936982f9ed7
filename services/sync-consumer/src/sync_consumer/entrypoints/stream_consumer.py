"""Reading one stream into the pipeline: the loops around the ConsumerGroup port.

Per stream, in this order:
1. `prepare`: join the group (created from the stream's first entry if missing), then claim
   every entry still pending in it (a killed predecessor's batch) and hand it to the pipeline
   before anything new is read, keeping the stream's order;
2. `read_loop`: up to `batch_size` new entries (or what `poll_ms` of waiting brought) to the
   pipeline, acknowledged only after the pipeline stored or dead-lettered them; a group that
   Redis lost is joined again (step 1) before reading on;
3. `claim_loop`: entries idle longer than `claim_idle_ms` (a consumer that died or hangs)
   through the same pipeline;
4. `maintenance_loop`: lag and pending counts exported, the stream trimmed below what every
   group still needs.

Nothing here speaks Redis: the commands are the adapter's (adapters.redis_streams), the
decisions about rows and dead letters the pipeline's (service_layer.pipeline).
"""

from __future__ import annotations

import asyncio

from promo_libs.logging import get_logger
from sync_consumer.adapters.metrics import BATCH_SIZE, DEAD_LETTERS, EVENTS, LAG, PENDING
from sync_consumer.domain.model import GroupLost, StreamEntry
from sync_consumer.domain.ports import ConsumerGroup
from sync_consumer.service_layer.pipeline import StreamPipeline

log = get_logger(__name__)

_RETRY_SECONDS = 1.0  # after a failed read: Redis down or restarting


class StreamConsumer:
    def __init__(
        self,
        group: ConsumerGroup,
        pipeline: StreamPipeline,
        *,
        batch_size: int,
        poll_ms: int,
        claim_idle_ms: int,
        retention_ms: int,
    ) -> None:
        self.stream = group.stream
        self._group = group
        self._pipeline = pipeline
        self._batch_size = batch_size
        self._poll_ms = poll_ms
        self._claim_idle_ms = claim_idle_ms
        self._retention_ms = retention_ms

    async def _store(self, entries: list[StreamEntry]) -> None:
        """The pipeline stores or dead-letters every entry; then they are acknowledged."""
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
        await self._group.ack(entries)

    async def prepare(self) -> None:
        """Before reading: the group, then whatever is still pending in it."""
        await self._group.join()
        await self.claim_pass(min_idle_ms=0)

    async def claim_pass(self, min_idle_ms: int) -> int:
        cursor = "0-0"
        claimed = 0
        while True:
            entries, cursor = await self._group.claim(min_idle_ms, self._batch_size, cursor)
            if entries:
                await self._store(entries)
                claimed += len(entries)
            if cursor == "0-0":
                return claimed

    async def read_once(self) -> int:
        """One batch of new entries stored and acknowledged; how many there were."""
        entries = await self._group.read(self._batch_size, self._poll_ms)
        if entries:
            await self._store(entries)
        return len(entries)

    async def read_loop(self) -> None:
        while True:
            try:
                await self.read_once()
            except GroupLost:
                log.warning("consumer group lost; recreating", stream=self.stream)
                await self._prepare_again()
            except Exception as exc:
                log.warning("reading the stream failed", stream=self.stream, error=str(exc))
                await asyncio.sleep(_RETRY_SECONDS)

    async def _prepare_again(self) -> None:
        try:
            await self.prepare()
        except Exception as exc:
            log.warning("recreating the consumer group failed", stream=self.stream, error=str(exc))
            await asyncio.sleep(_RETRY_SECONDS)

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
        status = await self._group.status()
        if status is None:
            return  # the stream or group is gone: the read loop joins it again
        LAG.labels(self.stream).set(float(status.lag))
        PENDING.labels(self.stream).set(float(status.pending))
        await self._group.trim(self._retention_ms)
