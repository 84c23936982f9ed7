"""What every outgoing call carries: the request id being served (so the callee logs the same
id) and, on a channel made for one end user, that user's token."""

from __future__ import annotations

from typing import Any

import grpc
import structlog

from promo_libs.grpc.client import REQUEST_ID_HEADER, _OutgoingMetadata, _SyncOutgoingMetadata


async def _sent(
    interceptor: _OutgoingMetadata, metadata: tuple[tuple[str, str], ...] | None = None
) -> list[tuple[str, str]]:
    seen: list[grpc.aio.ClientCallDetails] = []

    async def continuation(details: grpc.aio.ClientCallDetails, request: Any) -> str:
        seen.append(details)
        return "answer"

    details = grpc.aio.ClientCallDetails(
        "/promo.v1.UserService/GetUser",
        1.0,
        None if metadata is None else grpc.aio.Metadata(*metadata),
        None,
        None,
    )
    assert await interceptor.intercept_unary_unary(continuation, details, object()) == "answer"
    (call,) = seen
    return [(key, str(value)) for key, value in call.metadata or ()]


async def test_a_call_made_while_serving_carries_the_request_id() -> None:
    with structlog.contextvars.bound_contextvars(request_id="req-1"):
        assert await _sent(_OutgoingMetadata(None)) == [(REQUEST_ID_HEADER, "req-1")]


async def test_outside_a_request_nothing_is_added() -> None:
    structlog.contextvars.unbind_contextvars("request_id")
    assert await _sent(_OutgoingMetadata(None)) == []


async def test_a_call_that_names_its_own_request_id_keeps_it() -> None:
    with structlog.contextvars.bound_contextvars(request_id="req-1"):
        sent = await _sent(_OutgoingMetadata(None), ((REQUEST_ID_HEADER, "mine"),))
    assert sent == [(REQUEST_ID_HEADER, "mine")]


async def test_a_users_channel_adds_the_token_beside_the_request_id() -> None:
    with structlog.contextvars.bound_contextvars(request_id="req-2"):
        sent = await _sent(_OutgoingMetadata("t0ken"), (("x-other", "v"),))
    assert sent == [
        ("x-other", "v"),
        ("authorization", "Bearer t0ken"),
        (REQUEST_ID_HEADER, "req-2"),
    ]


def _sent_sync(
    interceptor: _SyncOutgoingMetadata, metadata: tuple[tuple[str, str], ...] | None = None
) -> list[tuple[str, str]]:
    seen: list[grpc.ClientCallDetails] = []

    def continuation(details: grpc.ClientCallDetails, request: Any) -> str:
        seen.append(details)
        return "answer"

    details = grpc.aio.ClientCallDetails(
        "/promo.v1.UserService/GetUser", 1.0, None if metadata is None else list(metadata),
        None, None,
    )  # fmt: skip
    assert interceptor.intercept_unary_unary(continuation, details, object()) == "answer"
    (call,) = seen
    assert (call.method, call.timeout) == ("/promo.v1.UserService/GetUser", 1.0)
    return [(key, str(value)) for key, value in call.metadata or ()]


def test_a_blocking_channel_forwards_the_request_id_and_the_token_the_same_way() -> None:
    with structlog.contextvars.bound_contextvars(request_id="req-3"):
        assert _sent_sync(_SyncOutgoingMetadata(None)) == [(REQUEST_ID_HEADER, "req-3")]
        assert _sent_sync(_SyncOutgoingMetadata("t0ken"), ((REQUEST_ID_HEADER, "mine"),)) == [
            (REQUEST_ID_HEADER, "mine"),
            ("authorization", "Bearer t0ken"),
        ]
    structlog.contextvars.unbind_contextvars("request_id")
    assert _sent_sync(_SyncOutgoingMetadata(None)) == []
