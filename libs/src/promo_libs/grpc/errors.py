"""The one error mapper: domain errors and dependency failures -> gRPC status with rich details.

Details follow google.rpc: BadRequest with field violations for INVALID_ARGUMENT, ErrorInfo with
a stable `reason` (domain "promo.v1") otherwise. Anything unexpected becomes INTERNAL with a
generic message; the traceback goes to the log, never to the caller.

This layer knows no database: failures of a data store's driver are translated by that store's
adapter (a `Driver`, e.g. promo_libs.mongo.errors.MONGO), which the service's composition root
hands to the server.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Protocol

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from promo_libs import errors

ERROR_DOMAIN = "promo.v1"

# The status travels in trailers (grpc-message, grpc-status-details-bin in base64), and a client
# refuses metadata beyond its limit (gRPC's default soft limit is 8 KiB, hard 16 KiB): a request
# with 1000 bad ids answered with 1000 violations reached the caller as RESOURCE_EXHAUSTED. So the
# list is capped by count and by bytes, long texts are clipped, and the message says how many
# more there were. 3,000 bytes of details are about 4 KiB in base64, leaving room for the message
# (percent-encoded) and an ErrorInfo.
MAX_LISTED_VIOLATIONS = 25
_MAX_DETAILS_BYTES = 3000
_MAX_FIELD_CHARS = 160
_MAX_DESCRIPTION_CHARS = 240
_MAX_MESSAGE_CHARS = 512

_CODES: dict[type[errors.DomainError], int] = {
    errors.InvalidArgument: code_pb2.INVALID_ARGUMENT,
    errors.NotFound: code_pb2.NOT_FOUND,
    errors.AlreadyExists: code_pb2.ALREADY_EXISTS,
    errors.FailedPrecondition: code_pb2.FAILED_PRECONDITION,
    errors.PermissionDenied: code_pb2.PERMISSION_DENIED,
    errors.Unauthenticated: code_pb2.UNAUTHENTICATED,
    errors.Aborted: code_pb2.ABORTED,
    errors.ResourceExhausted: code_pb2.RESOURCE_EXHAUSTED,
    errors.Unavailable: code_pb2.UNAVAILABLE,
    errors.DeadlineExceeded: code_pb2.DEADLINE_EXCEEDED,
}


class Driver(Protocol):
    """A data store's adapter, as the server sees it: what its driver's failures mean to the
    caller (None: not one of its failures), and how to bound its operations by an RPC's
    deadline."""

    name: str

    def translate(self, exc: BaseException) -> errors.DomainError | None: ...

    def bound(self, seconds: float) -> AbstractContextManager[None]: ...


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _capped_bad_request(
    violations: tuple[errors.FieldViolation, ...],
) -> error_details_pb2.BadRequest:
    """The first violations, as many as fit the count and byte budget (at least one)."""
    bad_request = error_details_pb2.BadRequest()
    for violation in violations[:MAX_LISTED_VIOLATIONS]:
        item = error_details_pb2.BadRequest.FieldViolation(
            field=_clip(violation.field, _MAX_FIELD_CHARS),
            description=_clip(violation.description, _MAX_DESCRIPTION_CHARS),
        )
        # +4: the tag and length prefix of one repeated entry.
        if bad_request.field_violations and (
            bad_request.ByteSize() + item.ByteSize() + 4 > _MAX_DETAILS_BYTES
        ):
            break
        bad_request.field_violations.append(item)
    return bad_request


def status_for(error: errors.DomainError) -> status_pb2.Status:
    code = next(
        (c for cls, c in _CODES.items() if isinstance(error, cls)), code_pb2.FAILED_PRECONDITION
    )
    message = error.message
    bad_request: error_details_pb2.BadRequest | None = None
    if isinstance(error, errors.InvalidArgument):
        bad_request = _capped_bad_request(error.violations)
        listed, total = len(bad_request.field_violations), len(error.violations)
        if listed < total:
            shown = "; ".join(f"{v.field}: {v.description}" for v in bad_request.field_violations)
            message = _clip(shown, _MAX_MESSAGE_CHARS - 60) + (
                f" (and {total - listed} more violations not listed)"
            )
    status = status_pb2.Status(code=code, message=_clip(message, _MAX_MESSAGE_CHARS))
    if bad_request is not None:
        status.details.append(_pack(bad_request))
    if isinstance(error, errors.ResourceExhausted):
        retry = error_details_pb2.RetryInfo()
        retry.retry_delay.FromMilliseconds(max(1, math.ceil(error.retry_after_seconds * 1000)))
        status.details.append(_pack(retry))
    if error.reason:
        info = error_details_pb2.ErrorInfo(
            reason=error.reason, domain=ERROR_DOMAIN, metadata=error.metadata
        )
        status.details.append(_pack(info))
    return status


def to_domain_error(
    exc: BaseException, drivers: Sequence[Driver] = ()
) -> errors.DomainError | None:
    """Infrastructure failures that have a meaning for the caller; None for real bugs."""
    if isinstance(exc, errors.DomainError):
        return exc
    for driver in drivers:
        translated = driver.translate(exc)
        if translated is not None:
            return translated
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return errors.DeadlineExceeded("the deadline passed before the operation completed")
    if isinstance(exc, grpc.aio.AioRpcError) and exc.code() in (
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    ):
        return errors.Unavailable(
            "a service this one depends on is unavailable", reason="DEPENDENCY_UNAVAILABLE"
        )
    return None


def grpc_status_for(exc: BaseException, drivers: Sequence[Driver] = ()) -> grpc.Status:
    domain_error = to_domain_error(exc, drivers)
    if domain_error is None:
        status = status_pb2.Status(code=code_pb2.INTERNAL, message="internal error")
    else:
        status = status_for(domain_error)
    result: grpc.Status = rpc_status.to_status(status)
    return result


def error_info(error: grpc.aio.AioRpcError | grpc.RpcError) -> error_details_pb2.ErrorInfo | None:
    """The ErrorInfo detail of a failed call, for clients that branch on `reason`."""
    status = rpc_status.from_call(error)
    if status is None:
        return None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    return None


def bad_request(error: grpc.aio.AioRpcError | grpc.RpcError) -> error_details_pb2.BadRequest | None:
    """The BadRequest detail (field violations) of a failed call."""
    status = rpc_status.from_call(error)
    if status is None:
        return None
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            violations = error_details_pb2.BadRequest()
            detail.Unpack(violations)
            return violations
    return None
