"""Per-method authorization by workload identity (DESIGN.md, I7), enforced in one place.

Each service declares one visible table, `ServicePolicy`: method -> the workloads allowed to
call it. The server's interceptor asks `Authorizer.authorize` before any handler runs:

- the caller is the SPIFFE ID of the client certificate that the TLS handshake already verified
  against the trusted CA (a plaintext caller or a certificate of another CA never gets this far:
  the handshake fails);
- a certificate without a SPIFFE ID of our trust domain naming a known workload is refused
  (PERMISSION_DENIED, reason UNKNOWN_IDENTITY);
- a method the table does not name, or names without this workload, is refused
  (PERMISSION_DENIED, reason METHOD_NOT_ALLOWED): deny by default, so a method added to a proto
  without a policy entry is closed, and `check_covers` stops the server at start-up instead;
- grpc.health.v1 is open to every authenticated workload; reflection only to operators.

The caller is then put in `promo_libs.identity.current_caller` for the service layer, and the
end user the call is made for, when it carries `authorization: Bearer <user token>`, in
`current_user` (a token that does not verify is refused: UNAUTHENTICATED, INVALID_USER_TOKEN).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from grpc_health.v1 import health

from promo_libs import errors
from promo_libs.identity import Caller, Workload, parse_spiffe_id
from promo_libs.user_tokens import UserTokenVerifier

HEALTH_SERVICE = health.SERVICE_NAME
REFLECTION_SERVICES = (
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
)
EVERY_WORKLOAD = frozenset(Workload)
OPERATORS = frozenset({Workload.OPERATOR})


def allow(*workloads: Workload) -> frozenset[Workload]:
    return frozenset(workloads)


@dataclass(frozen=True)
class ServicePolicy:
    """One service's table: method name (as in the proto) -> workloads allowed to call it."""

    service: str
    methods: Mapping[str, frozenset[Workload]] = field(default_factory=dict)


def _peer_spiffe_ids(context: grpc.aio.ServicerContext[Any, Any]) -> list[str]:
    auth = context.auth_context() or {}
    # gRPC core extracts the URI SAN that is a SPIFFE ID as `peer_spiffe_id` (only when there is
    # exactly one); the SAN list is the fallback for older cores.
    values = auth.get("peer_spiffe_id") or [
        v for v in auth.get("x509_subject_alternative_name", ()) if v.startswith(b"spiffe://")
    ]
    return [v.decode("utf-8", "replace") for v in values]


class Authorizer:
    """The tables of one server, with health and reflection rules added."""

    def __init__(
        self,
        policies: Iterable[ServicePolicy],
        trust_domain: str,
        *,
        reflection: frozenset[Workload] = OPERATORS,
        tokens: UserTokenVerifier | None = None,
    ) -> None:
        self.trust_domain = trust_domain
        self._tokens = tokens
        self._allowed: dict[str, frozenset[Workload]] = {}
        for policy in policies:
            for method, workloads in policy.methods.items():
                self._allowed[f"/{policy.service}/{method}"] = frozenset(workloads)
        self._open_services = {HEALTH_SERVICE: EVERY_WORKLOAD}
        self._open_services.update(dict.fromkeys(REFLECTION_SERVICES, reflection))

    def allowed(self, full_method: str) -> frozenset[Workload]:
        """Who may call `/pkg.Service/Method`; empty when nobody may."""
        service = full_method.lstrip("/").rpartition("/")[0]
        if service in self._open_services:
            return self._open_services[service]
        return self._allowed.get(full_method, frozenset())

    def check_covers(self, services: Sequence[ServiceDescriptor]) -> None:
        """Refuses to serve a method that has no policy entry (a table that forgot it)."""
        missing = [
            f"{svc.full_name}/{method.name}"
            for svc in services
            for method in svc.methods
            if f"/{svc.full_name}/{method.name}" not in self._allowed
        ]
        if missing:
            raise RuntimeError(f"no authorization policy for: {', '.join(missing)}")

    def authorize(self, full_method: str, context: grpc.aio.ServicerContext[Any, Any]) -> Caller:
        """The caller, if its certificate names a workload this method allows; else raises."""
        ids = _peer_spiffe_ids(context)
        callers = [c for i in ids if (c := parse_spiffe_id(i, self.trust_domain)) is not None]
        if len(callers) != 1:
            raise errors.PermissionDenied(
                "the client certificate names no workload of this trust domain",
                reason="UNKNOWN_IDENTITY",
            )
        caller = callers[0]
        if caller.workload not in self.allowed(full_method):
            raise errors.PermissionDenied(
                f"{caller.workload.value} may not call {full_method.lstrip('/')}",
                reason="METHOD_NOT_ALLOWED",
                metadata={"method": full_method.lstrip("/"), "caller": caller.spiffe_id},
            )
        return caller

    def user_of(self, context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
        """The subject of the call's verified user token; None when it carries none."""
        for key, value in context.invocation_metadata() or ():
            if key != "authorization" or not isinstance(value, str):
                continue
            scheme, _, token = value.partition(" ")
            if scheme.lower() != "bearer" or not token or self._tokens is None:
                raise errors.Unauthenticated(
                    "the user token cannot be verified here", reason="INVALID_USER_TOKEN"
                )
            return self._tokens.verify(token.strip())
        return None
