"""The rebuild gate on Redis: a rebuild holds every consumer of a group between two batches,
and the hold fences them for as long as the rebuild can prove it still holds it.

Keys, per consumer group, all tagged `{<group>}` so they share one hash slot (each script
below names several of them, which Redis Cluster allows only within one slot):
- `promo:sync:{<group>}:hold`: the token of the rebuild holding the group, with an expiry the
  rebuild keeps refreshing; a consumer that finds it before a batch waits until it is gone;
- `promo:sync:{<group>}:fence`: a counter; each rebuild takes the next value as its token;
- `promo:sync:{<group>}:busy`: a sorted set of the consumers inside a batch, scored by when
  their mark expires (in case one dies mid-batch);
- `promo:sync:{<group>}:generation`: incremented by a rebuild that swapped tables in; a
  consumer that sees it change drops its cached stream positions.

Why no batch runs while held: a consumer's `enter` is one script (look at the hold; if there
is none, add the busy mark), and the rebuild sets the hold before it waits for the busy set to
empty; Redis runs scripts one at a time, so either the consumer sees the hold (and waits) or
the rebuild sees its mark (and waits for the batch to end).

Why a lapse cannot go unnoticed: the hold is only ever refreshed by a script that checks the
token (never re-created), so finding one's own token at time t proves the hold existed without
a gap from its creation to t, and hence that no consumer started a batch meanwhile. The rebuild
confirms it right before its swap, or aborts with the live tables untouched, and again right
after it, or fails loudly (`HoldLost`). The refresher logs a failed refresh and keeps going;
once it could not confirm the hold for a whole TTL it treats the hold as lost.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from promo_libs.logging import get_logger
from sync_consumer.domain.ports import RebuildGate

log = get_logger(__name__)

_UNSEEN = b"unseen"

# KEYS: hold, busy, generation. ARGV: member, busy ms. -> {held, generation or ''}
_ENTER = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('ZREM', KEYS[2], ARGV[1])
  return {1, ''}
end
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('ZADD', KEYS[2], ms + tonumber(ARGV[2]), ARGV[1])
return {0, redis.call('GET', KEYS[3]) or ''}
"""

# KEYS: busy. -> how many consumers are inside a batch (expired marks dropped)
_BUSY = """
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ms)
return redis.call('ZCARD', KEYS[1])
"""

# KEYS: hold. ARGV: token, ttl ms. -> 1 when still ours (and refreshed), else 0
_REFRESH = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

# KEYS: hold, generation. ARGV: token, swapped (1/0). -> 1 when the hold was still ours
_RELEASE = """
if ARGV[2] == '1' then redis.call('INCR', KEYS[2]) end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""


def _key(group: str, what: str) -> str:
    return f"promo:sync:{{{group}}}:{what}"


def hold_key(group: str) -> str:
    return _key(group, "hold")


def generation_key(group: str) -> str:
    return _key(group, "generation")


def busy_key(group: str) -> str:
    return _key(group, "busy")


def fence_key(group: str) -> str:
    return _key(group, "fence")


class RedisRebuildGate(RebuildGate):
    def __init__(
        self,
        client: Any,
        group: str,
        stream: str,
        consumer: str,
        *,
        busy_ms: int = 60_000,
        poll_seconds: float = 0.2,
    ) -> None:
        self._client = client
        self._member = f"{stream}:{consumer}"
        self._keys = [hold_key(group), busy_key(group), generation_key(group)]
        self._enter = client.register_script(_ENTER)
        self._busy_ms = busy_ms
        self._poll = poll_seconds
        self._seen: bytes | None = _UNSEEN

    async def enter(self) -> bool:
        held = False
        while True:
            blocked, generation = await self._enter(
                keys=self._keys, args=[self._member, self._busy_ms]
            )
            if not int(blocked):
                break
            held = True
            await asyncio.sleep(self._poll)
        current = bytes(generation) if isinstance(generation, bytes) else str(generation).encode()
        changed = held or self._seen not in (_UNSEEN, current)
        self._seen = current
        return changed

    async def leave(self) -> None:
        await self._client.zrem(self._keys[1], self._member)


class HoldLost(RuntimeError):
    """The rebuild can no longer prove that it held the consumers without a gap."""


class RebuildHold:
    """One rebuild's hold on a group's consumers (module doc): take, refresh, confirm, release."""

    def __init__(self, client: Any, group: str, ttl_ms: int) -> None:
        self._client = client
        self._group = group
        self._ttl_ms = ttl_ms
        self._refresh = client.register_script(_REFRESH)
        self._release = client.register_script(_RELEASE)
        self._busy = client.register_script(_BUSY)
        self.token = ""
        self._confirmed_at = 0.0
        self._lost: str | None = None
        self._refresher: asyncio.Task[None] | None = None

    async def take(self) -> None:
        token = str(await self._client.incr(fence_key(self._group)))
        started = time.monotonic()
        if not await self._client.set(hold_key(self._group), token, nx=True, px=self._ttl_ms):
            raise HoldLost(f"another rebuild holds consumer group {self._group}")
        self.token, self._confirmed_at = token, started
        self._refresher = asyncio.create_task(self._keep())

    async def _keep(self) -> None:
        """Refreshes every quarter TTL; a failed refresh is logged and tried again, never fatal."""
        while self._lost is None:
            await asyncio.sleep(self._ttl_ms / 4000)
            try:
                await self._confirm_now()
            except HoldLost as exc:
                log.error("rebuild hold lost", group=self._group, reason=str(exc))
                return
            except Exception as exc:
                log.warning("refreshing the rebuild hold failed", group=self._group, error=str(exc))
                self._check_age()

    def _check_age(self) -> None:
        if time.monotonic() - self._confirmed_at >= self._ttl_ms / 1000:
            self._lost = self._lost or "not confirmed for a whole TTL (Redis unreachable)"

    async def _confirm_now(self) -> None:
        if self._lost is not None:
            raise HoldLost(self._lost)
        started = time.monotonic()
        ours = await self._refresh(keys=[hold_key(self._group)], args=[self.token, self._ttl_ms])
        self._check_age()  # the previous confirmation may be older than a TTL by now
        if self._lost is not None:
            raise HoldLost(self._lost)
        if not int(ours):
            self._lost = "the hold expired or was replaced"
            raise HoldLost(self._lost)
        self._confirmed_at = started

    async def confirm(self) -> None:
        """Proves the hold was never lost up to now and refreshes it to a full TTL; HoldLost
        otherwise (Redis errors included: what cannot be confirmed is not held)."""
        try:
            await self._confirm_now()
        except HoldLost:
            raise
        except Exception as exc:
            raise HoldLost(f"could not confirm the hold: {exc}") from exc

    async def wait_idle(self, timeout_seconds: float) -> None:
        """Returns once no consumer of the group is inside a batch (the hold is set already)."""
        deadline = time.monotonic() + timeout_seconds
        while int(await self._busy(keys=[busy_key(self._group)])):
            if time.monotonic() > deadline:
                raise TimeoutError("consumers still inside a batch")
            await asyncio.sleep(0.1)

    async def release(self, *, swapped: bool, attempts: int = 20) -> None:
        """Stops refreshing and releases (only our own token); bumps the generation after a swap.

        Retried on Redis errors for a while: a hold left behind only delays the consumers by its
        TTL, but a swap without a generation bump would leave them with stale cached positions
        (they also drop their positions whenever they were held, which covers that case).
        """
        if self._refresher is not None:
            self._refresher.cancel()
            await asyncio.gather(self._refresher, return_exceptions=True)
        if not self.token:
            return
        keys = [hold_key(self._group), generation_key(self._group)]
        for attempt in range(attempts):
            try:
                await self._release(keys=keys, args=[self.token, "1" if swapped else "0"])
                return
            except Exception as exc:
                log.warning("releasing the rebuild hold failed", error=str(exc), attempt=attempt)
                await asyncio.sleep(min(0.1 * 2**attempt, 2.0))
        log.error("rebuild hold not released; it expires by itself", group=self._group)
