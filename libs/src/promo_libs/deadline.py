"""The deadline of the RPC being served, for work that must not outlive its caller.

Set by the server interceptor (promo_libs.grpc.interceptors) as a time.monotonic() instant;
None outside an RPC. No grpc here: adapters read it (e.g. a CPU-bound queue that skips work
whose caller has already given up).
"""

from __future__ import annotations

import contextvars
import time

current_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "current_deadline", default=None
)


def seconds_left() -> float | None:
    deadline = current_deadline.get()
    return None if deadline is None else deadline - time.monotonic()
