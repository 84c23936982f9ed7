"""Domain errors: what went wrong, in terms a caller can act on.

Pure Python on purpose: domain and application code raise these without knowing about gRPC.
The gRPC layer (promo_libs.grpc.errors) is the one place that maps them to status codes and
google.rpc details. `reason` is a stable string from promo.v1.ErrorReason (without its prefix);
clients branch on it, never on the message.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

_T = TypeVar("_T")
_V = TypeVar("_V")


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One bad field of a request: `field` is the request field path, e.g. `user.email`."""

    field: str
    description: str


class DomainError(Exception):
    """Base of every error that is the caller's business (not a bug of ours)."""

    def __init__(
        self, message: str, reason: str = "", metadata: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason
        self.metadata: dict[str, str] = dict(metadata or {})


class InvalidArgument(DomainError):
    """The request is malformed; `violations` names every offending field."""

    def __init__(self, violations: Iterable[FieldViolation], message: str = "") -> None:
        self.violations = tuple(violations)
        text = message or "; ".join(f"{v.field}: {v.description}" for v in self.violations)
        super().__init__(text or "invalid argument")


class NotFound(DomainError):
    pass


class AlreadyExists(DomainError):
    pass


class FailedPrecondition(DomainError):
    """The request is well formed but the system's state refuses it (e.g. a code is exhausted)."""


class PermissionDenied(DomainError):
    pass


class Unauthenticated(DomainError):
    pass


class ResourceExhausted(DomainError):
    """Too many calls (a rate limit, a lock-out, a full queue): retry after a while."""

    def __init__(
        self,
        message: str,
        reason: str = "",
        metadata: Mapping[str, str] | None = None,
        *,
        retry_after_seconds: float = 1.0,
    ) -> None:
        super().__init__(message, reason, metadata)
        self.retry_after_seconds = retry_after_seconds


class Aborted(DomainError):
    """A concurrency conflict: retrying the whole request may succeed."""


class DeadlineExceeded(DomainError):
    """The caller's deadline passed before the work was done; its outcome may still be unknown."""


class Unavailable(DomainError):
    """A dependency (database, another service) cannot be reached right now; safe to retry."""


@dataclass
class Violations:
    """Collects field violations while validating a request, then raises them all at once."""

    items: list[FieldViolation] = field(default_factory=list)

    def add(self, field_path: str, description: str) -> None:
        self.items.append(FieldViolation(field_path, description))

    def __bool__(self) -> bool:
        return bool(self.items)

    def raise_if_any(self) -> None:
        if self.items:
            raise InvalidArgument(self.items)


def checked(
    violations: Violations, field_path: str, rule: Callable[[_V], _T], value: _V
) -> _T | None:
    """`rule(value)` (a normalized value), or None with the rule's ValueError recorded as the
    violation of `field_path`: every field of a request is checked, and all that are bad are
    reported together."""
    try:
        return rule(value)
    except ValueError as exc:
        violations.add(field_path, str(exc))
        return None
