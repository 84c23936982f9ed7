"""The caller's deadline, as the use cases see it, and work that must outlive it.

The server interceptor binds the caller's deadline around every RPC (`bound`), beside PyMongo's
own `pymongo.timeout`, so a use case can bound its waits by it (`within`): a wait that outlasts
the caller only ever produces an answer nobody reads, while it holds a resource others need.

Some work must not end with the caller: a saga's completion steps (record the outcome, give a
redemption back) are what keeps two stores consistent after the caller left. `detached` starts
such work in a fresh context: the log context (request id) is kept, the caller's deadline --
ours and PyMongo's, which only ever tightens when nested -- is not; the work gets a budget of
its own instead, so it is still bounded.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import pymongo
import structlog

_T = TypeVar("_T")

# time.monotonic() by which the current request must be answered; None: no deadline.
_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "promo_deadline", default=None
)


@contextmanager
def bound(seconds: float | None) -> Iterator[None]:
    """Within this block, work must be done in `seconds` (None: no limit); nesting only tightens."""
    current = _DEADLINE.get()
    deadline = current
    if seconds is not None:
        mine = time.monotonic() + max(seconds, 0.0)
        deadline = mine if current is None else min(current, mine)
    token = _DEADLINE.set(deadline)
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def remaining() -> float | None:
    """Seconds left before the current deadline (0 once passed); None when there is none."""
    deadline = _DEADLINE.get()
    return None if deadline is None else max(deadline - time.monotonic(), 0.0)


def within(limit: float) -> float:
    """The time a wait may take: `limit`, or less when the caller's deadline comes first."""
    left = remaining()
    return limit if left is None else min(limit, left)


def detached(work: Coroutine[Any, Any, _T], *, name: str, budget: float) -> asyncio.Task[_T]:
    """Starts `work` as a task that does not inherit the caller's deadline, bounded by `budget`
    seconds of its own (its MongoDB operations included)."""
    fresh = contextvars.Context()
    fresh.run(structlog.contextvars.bind_contextvars, **structlog.contextvars.get_contextvars())

    async def bounded() -> _T:
        with pymongo.timeout(budget), bound(budget):
            return await work

    return asyncio.create_task(bounded(), name=name, context=fresh)
