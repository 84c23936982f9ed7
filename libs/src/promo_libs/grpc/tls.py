"""Mutual TLS for every gRPC port and every channel, from certificate files (DESIGN.md, I7).

A workload has one certificate (its SPIFFE ID in the URI SAN), one key and the CA bundle it
trusts, mounted as files (cert-manager / SPIRE in Kubernetes, devstack's development CA locally).
The same files serve both directions: the server presents them and requires a client certificate
signed by the bundle; channels present them to the services they call.

Rotation without restart: the server's credentials are dynamic (gRPC calls the fetcher before
each new handshake) and the fetcher re-reads the files whenever one of them changed on disk, so
every connection made after a rotation uses the new certificate and trusts the new bundle.
Connections already open keep the session they negotiated. A file caught half-written (the
mounting agent should rename, but may not) keeps the previous configuration until the next
handshake instead of failing the server.

Channels: gRPC Python has no dynamic client credentials (the C core's certificate providers are
not exposed), so promo_libs.grpc.client re-makes the channel from the files when they change,
the same stamp deciding, and retires the old one once its calls have finished.
"""

from __future__ import annotations

import threading

import grpc

from promo_libs.config import TlsPaths
from promo_libs.logging import get_logger

log = get_logger(__name__)


class _ReloadingFetcher:
    """gRPC's certificate-configuration fetcher: a new configuration when the files changed."""

    def __init__(self, paths: TlsPaths) -> None:
        self._paths = paths
        self._lock = threading.Lock()
        self._stamp = paths.stamp()

    def initial(self) -> grpc.ServerCertificateConfiguration:
        return _configuration(self._paths)

    def __call__(self) -> grpc.ServerCertificateConfiguration | None:
        # Runs on gRPC's own threads, before each handshake: cheap when nothing changed.
        with self._lock:
            try:
                stamp = self._paths.stamp()
                if stamp == self._stamp:
                    return None
                configuration = _configuration(self._paths)
            except (OSError, ValueError) as exc:
                log.warning("tls files unreadable; keeping the previous ones", error=repr(exc))
                return None
            self._stamp = stamp
            log.info("tls certificate reloaded", cert=str(self._paths.cert))
            return configuration


def read_pem(paths: TlsPaths) -> tuple[bytes, bytes, bytes]:
    """(chain, key, ca) as they are on disk now; ValueError when one is not PEM (a file caught
    mid-write, or the wrong file), OSError when one is missing."""
    chain, key, ca = paths.read()
    if b"PRIVATE KEY" not in key or b"CERTIFICATE" not in chain or b"CERTIFICATE" not in ca:
        raise ValueError("not PEM")
    return chain, key, ca


def _configuration(paths: TlsPaths) -> grpc.ServerCertificateConfiguration:
    chain, key, ca = read_pem(paths)
    return grpc.ssl_server_certificate_configuration([(key, chain)], root_certificates=ca)


def server_credentials(paths: TlsPaths) -> grpc.ServerCredentials:
    """Credentials that require and verify a client certificate, re-read when files change."""
    fetcher = _ReloadingFetcher(paths)
    # gRPC documents None as "no change"; its stubs type the fetcher without the None.
    return grpc.dynamic_ssl_server_credentials(
        fetcher.initial(),
        fetcher,  # type: ignore[arg-type]
        require_client_authentication=True,
    )


def channel_credentials(paths: TlsPaths) -> grpc.ChannelCredentials:
    """Credentials for calling a service: verify it against the bundle, present our own, as the
    files are now (promo_libs.grpc.client re-makes its channel when they change)."""
    chain, key, ca = read_pem(paths)
    return grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=key, certificate_chain=chain
    )


__all__ = ["TlsPaths", "channel_credentials", "read_pem", "server_credentials"]
