"""Channels to the other services, with the same options everywhere, always mutual TLS.

The channel presents this workload's certificate (its identity, promo_libs.identity) and verifies
the server against the trusted CA bundle; the server's name is checked against the address's
host, which its certificate carries as a DNS or IP SAN. The files are re-read when they change:
the next call after a rotation presents the new certificate and trusts the new bundle, on the
same channel object (promo_libs.grpc.rotating; the server side re-reads by itself,
promo_libs.grpc.tls).

Every call carries the request id of the RPC being served (`x-request-id`), which the callee's
server interceptor adopts and logs: one order's lines join across orders, promocodes and users.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from promo_libs.config import TlsPaths
from promo_libs.grpc.rotating import RotatingChannel, RotatingSyncChannel
from promo_libs.logging import current_request_id

# The metadata key of the request id: taken (or made) by the server interceptor, sent on here.
REQUEST_ID_HEADER = "x-request-id"

# Retries are for transport failures only (UNAVAILABLE before the request was processed);
# application retries are the caller's business, with its idempotency key.
_SERVICE_CONFIG = json.dumps(
    {
        "methodConfig": [
            {
                "name": [{}],
                "retryPolicy": {
                    "maxAttempts": 3,
                    "initialBackoff": "0.05s",
                    "maxBackoff": "0.5s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }
)


CHANNEL_OPTIONS: list[tuple[str, str | int]] = [
    ("grpc.service_config", _SERVICE_CONFIG),
    ("grpc.enable_retries", 1),
    ("grpc.keepalive_time_ms", 30_000),
]


def _outgoing_metadata(
    given: tuple[tuple[str, str | bytes], ...], fixed: tuple[tuple[str, str], ...]
) -> list[tuple[str, str | bytes]] | None:
    """The call's metadata with the request id being served (when there is one and the call
    does not name its own) and `fixed` added; None when nothing is added (the call goes as is)."""
    added: list[tuple[str, str | bytes]] = list(fixed)
    request_id = current_request_id()
    if request_id and not any(key == REQUEST_ID_HEADER for key, _ in given):
        added.append((REQUEST_ID_HEADER, request_id))
    return [*given, *added] if added else None


def _token_metadata(user_token: str | None) -> tuple[tuple[str, str], ...]:
    return () if user_token is None else (("authorization", f"Bearer {user_token}"),)


class _OutgoingMetadata(grpc.aio.UnaryUnaryClientInterceptor):
    """Adds to every call the request id being served and, for channels made for one end user,
    `authorization: Bearer <token>` (_outgoing_metadata)."""

    def __init__(self, user_token: str | None) -> None:
        self._fixed = _token_metadata(user_token)

    async def intercept_unary_unary(
        self,
        continuation: Any,
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        metadata = _outgoing_metadata(tuple(client_call_details.metadata or ()), self._fixed)
        if metadata is None:
            return await continuation(client_call_details, request)
        details = grpc.aio.ClientCallDetails(
            client_call_details.method,
            client_call_details.timeout,
            grpc.aio.Metadata(*metadata),
            client_call_details.credentials,
            client_call_details.wait_for_ready,
        )
        return await continuation(details, request)


class _SyncCallDetails(NamedTuple):
    method: str
    timeout: float | None
    metadata: list[tuple[str, str | bytes]]
    credentials: grpc.CallCredentials | None
    wait_for_ready: bool | None
    compression: grpc.Compression | None


class _SyncOutgoingMetadata(grpc.UnaryUnaryClientInterceptor):
    """The blocking channels' _OutgoingMetadata: the same metadata, added the same way."""

    def __init__(self, user_token: str | None) -> None:
        self._fixed = _token_metadata(user_token)

    def intercept_unary_unary(
        self, continuation: Any, client_call_details: grpc.ClientCallDetails, request: Any
    ) -> Any:
        metadata = _outgoing_metadata(tuple(client_call_details.metadata or ()), self._fixed)
        if metadata is None:
            return continuation(client_call_details, request)
        # grpc.ClientCallDetails is abstract: the blocking API takes any object of its fields.
        details = _SyncCallDetails(
            client_call_details.method,
            client_call_details.timeout,
            metadata,
            client_call_details.credentials,
            client_call_details.wait_for_ready,
            getattr(client_call_details, "compression", None),
        )
        return continuation(details, request)


def secure_channel(
    address: str, tls: TlsPaths, *, user_token: str | None = None
) -> grpc.aio.Channel:
    """An asyncio channel to `address`, authenticated both ways with `tls`, forwarding the
    request id being served; with `user_token`, every call is made on that end user's behalf.
    Follows its certificate files (promo_libs.grpc.rotating)."""
    interceptors = [_OutgoingMetadata(user_token)]
    return RotatingChannel(
        tls,
        lambda credentials: grpc.aio.secure_channel(
            address, credentials, options=CHANNEL_OPTIONS, interceptors=interceptors
        ),
    )


def secure_sync_channel(
    address: str, tls: TlsPaths, *, user_token: str | None = None
) -> grpc.Channel:
    """The same, blocking (for tools and tests that run no event loop), forwarding the request
    id bound in the calling thread's context the same way."""
    interceptor = _SyncOutgoingMetadata(user_token)
    return RotatingSyncChannel(
        tls,
        lambda credentials: grpc.intercept_channel(
            grpc.secure_channel(address, credentials, options=CHANNEL_OPTIONS), interceptor
        ),
    )


async def peer_serving(channel: grpc.aio.Channel, deadline_seconds: float) -> bool:
    """Whether the service behind `channel` reports SERVING overall (a health probe)."""
    try:
        response = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=deadline_seconds
        )
    except grpc.aio.AioRpcError:
        return False
    return bool(response.status == health_pb2.HealthCheckResponse.SERVING)
