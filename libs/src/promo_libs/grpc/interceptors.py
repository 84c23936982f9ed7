"""Server interceptor: authorization, request id, access log, metrics, deadlines, error mapping.

Every RPC of every service passes through here, so servicers stay thin: they translate, call the
application service and let exceptions fly; this is where they become statuses. Authorization
(promo_libs.grpc.authz) comes first, for streaming RPCs (reflection, health Watch) too.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, cast

import grpc
import structlog

from promo_libs import deadlines, errors
from promo_libs.grpc.authz import Authorizer
from promo_libs.grpc.client import REQUEST_ID_HEADER
from promo_libs.grpc.errors import Driver, grpc_status_for, to_domain_error
from promo_libs.grpc.limits import RateLimits
from promo_libs.grpc.requests import timestamp_violations
from promo_libs.identity import current_caller, current_user
from promo_libs.logging import get_logger
from promo_libs.metrics import RPC_HANDLED, RPC_LATENCY

_MAX_REQUEST_ID = 128

log = get_logger(__name__)

Context = grpc.aio.ServicerContext[Any, Any]
Handler = Callable[[Any, Context], Awaitable[Any]]


def _request_id(context: Context) -> str:
    for key, value in context.invocation_metadata() or ():
        if (
            key == REQUEST_ID_HEADER
            and isinstance(value, str)
            and 0 < len(value) <= _MAX_REQUEST_ID
        ):
            return value
    return uuid.uuid4().hex


class ServerInterceptor(grpc.aio.ServerInterceptor):
    def __init__(
        self,
        authorizer: Authorizer,
        limits: RateLimits | None = None,
        max_deadline_seconds: float = 120.0,
        drivers: Sequence[Driver] = (),
    ) -> None:
        self.authorizer = authorizer
        self.limits = limits
        self.max_deadline_seconds = max_deadline_seconds
        # The data stores' adapters (promo_libs.grpc.errors.Driver): their failures' meaning
        # and their operations' deadline, so this layer needs to know no database.
        self.drivers = tuple(drivers)
        # Use cases whose caller left and that still run (see _wrap): shutdown waits for them
        # before it closes the connections they use.
        self.abandoned: set[asyncio.Future[Any]] = set()

    async def drain(self, within_seconds: float) -> None:
        """Waits (at most `within_seconds`) for the abandoned use cases to finish."""
        if self.abandoned:
            await asyncio.wait(set(self.abandoned), timeout=within_seconds)

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        full_method: str = handler_call_details.method
        if handler.unary_unary is None:
            return _authorized_stream(handler, full_method, self.authorizer, self.drivers)
        service, _, method = full_method.lstrip("/").rpartition("/")
        return grpc.unary_unary_rpc_method_handler(
            _wrap(
                cast(Handler, handler.unary_unary),
                full_method,
                service,
                method,
                self.abandoned,
                self.authorizer,
                self.limits,
                self.max_deadline_seconds,
                self.drivers,
            ),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def _authorized_stream(
    handler: grpc.RpcMethodHandler[Any, Any],
    full_method: str,
    authorizer: Authorizer,
    drivers: Sequence[Driver],
) -> grpc.RpcMethodHandler[Any, Any]:
    """A streaming handler (health Watch, reflection) behind the same authorization."""
    inner = cast(
        Callable[[Any, Context], Any],
        handler.unary_stream or handler.stream_stream or handler.stream_unary,
    )

    async def handle(request: Any, context: Context) -> Any:
        try:
            caller = authorizer.authorize(full_method, context)
        except Exception as exc:
            status = grpc_status_for(exc, drivers)
            log.info("rpc refused", rpc=full_method, code=status.code.name, error=status.details)
            await context.abort(status.code, status.details, status.trailing_metadata)
        current_caller.set(caller)
        result = inner(request, context)
        if hasattr(result, "__aiter__"):
            # An async-generator servicer: forward what it yields (this wrapper writes instead,
            # so both styles of servicer go through one coroutine).
            async for response in cast(AsyncIterator[Any], result):
                await context.write(response)
            return None
        return await result

    options = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(handle, **options)
    if handler.stream_stream is not None:
        return grpc.stream_stream_rpc_method_handler(handle, **options)
    return grpc.stream_unary_rpc_method_handler(handle, **options)


def _result_dropper(drivers: Sequence[Driver]) -> Callable[[asyncio.Future[Any]], None]:
    def drop_result(work: asyncio.Future[Any]) -> None:
        """Observes the outcome of a use case whose caller left, so it is logged, not lost."""
        if work.cancelled():
            return
        error = work.exception()
        if error is not None and to_domain_error(error, drivers) is None:
            log.error("abandoned rpc failed", error=repr(error))

    return drop_result


def _wrap(
    inner: Handler,
    full_method: str,
    service: str,
    method: str,
    abandoned: set[asyncio.Future[Any]],
    authorizer: Authorizer,
    limits: RateLimits | None,
    max_deadline_seconds: float,
    drivers: Sequence[Driver],
) -> Handler:
    drop_result = _result_dropper(drivers)

    async def handle(request: Any, context: Context) -> Any:
        request_id = _request_id(context)
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        with structlog.contextvars.bound_contextvars(request_id=request_id, rpc=method):
            await context.send_initial_metadata(((REQUEST_ID_HEADER, request_id),))
            try:
                # Before anything else runs: the use case sees the caller (a context variable,
                # copied into the task below), or is never started.
                current_caller.set(authorizer.authorize(full_method, context))
                current_user.set(authorizer.user_of(context))
                if limits is not None:  # before any work: a refused call costs nothing
                    await limits.admit(full_method, request)
                # Checks every request needs, whatever its servicer (promo_libs.grpc.requests).
                refused = timestamp_violations(request)
                if refused:
                    raise errors.InvalidArgument(refused)
                # The caller's deadline bounds every MongoDB operation made for this RPC and
                # every wait a use case makes for it (promo_libs.deadlines), and so does the
                # server's maximum: a call without a deadline (or a far one) cannot hold the
                # server's resources for ever, even after its caller left.
                remaining = context.time_remaining()
                bound = (
                    max_deadline_seconds
                    if remaining is None
                    else min(remaining, max_deadline_seconds)
                )
                with contextlib.ExitStack() as scope:
                    for driver in drivers:
                        scope.enter_context(driver.bound(bound))
                    scope.enter_context(deadlines.bound(bound))
                    work = asyncio.ensure_future(inner(request, context))
                # When the caller goes away, gRPC cancels this coroutine. The use case is not
                # cancelled with it: a coroutine cancelled inside PyMongo's pool breaks the pool
                # for every later request, and a half-run use case is exactly what our
                # single-document protocols are built to avoid. It finishes in the background,
                # bounded by the deadline above, and its answer is dropped.
                result = await asyncio.shield(work)
                if limits is not None:
                    await limits.succeeded(full_method, request)
                return result
            except grpc.aio.AbortError:
                code = context.code() or grpc.StatusCode.UNKNOWN  # the servicer aborted itself
                raise
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED  # the caller went away or its deadline passed
                abandoned.add(work)
                work.add_done_callback(abandoned.discard)
                work.add_done_callback(drop_result)
                raise
            except Exception as exc:
                if limits is not None:
                    await limits.failed(full_method, request, exc)
                status = grpc_status_for(exc, drivers)
                code = status.code
                if to_domain_error(exc, drivers) is None:
                    log.exception("rpc failed unexpectedly")
                else:
                    log.info("rpc refused", code=code.name, error=status.details)
                await context.abort(status.code, status.details, status.trailing_metadata)
            finally:
                elapsed = time.perf_counter() - started
                RPC_HANDLED.labels(service, method, code.name).inc()
                RPC_LATENCY.labels(service, method).observe(elapsed)
                log.info("rpc", code=code.name, ms=round(elapsed * 1000, 2))

    return handle
