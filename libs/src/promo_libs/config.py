"""Configuration from the environment: one loader, validated at start-up.

Each service declares a settings class composed from the mixins below and calls
`load_settings(TheClass)`. A missing or malformed variable stops the process with a message that
names the variable, instead of failing later on first use. Secrets have no defaults.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


@dataclass(frozen=True)
class TlsPaths:
    """One workload's certificate chain, private key and trusted CA bundle (PEM files)."""

    cert: Path
    key: Path
    ca: Path

    def read(self) -> tuple[bytes, bytes, bytes]:
        """(chain, key, ca), read now."""
        return self.cert.read_bytes(), self.key.read_bytes(), self.ca.read_bytes()

    def stamp(self) -> tuple[tuple[int, int, int], ...]:
        """What changes when any of the files is replaced or rewritten."""
        return file_stamp(self.cert, self.key, self.ca)


def file_stamp(*paths: Path) -> tuple[tuple[int, int, int], ...]:
    """(inode, mtime, size) of each file: changes when one is replaced or rewritten (three
    stats, no read)."""
    stamps = []
    for path in paths:
        info = os.stat(path)
        stamps.append((info.st_ino, info.st_mtime_ns, info.st_size))
    return tuple(stamps)


class ServiceSettings(BaseSettings):
    """What every process has: where it listens, how it logs, how it shuts down."""

    model_config = SettingsConfigDict(env_file=None, extra="ignore", frozen=True)

    grpc_host: str = Field("0.0.0.0", description="Interface the gRPC server binds to")
    grpc_port: int = Field(50051, ge=1, le=65535)
    metrics_port: int = Field(9101, ge=0, le=65535, description="Prometheus /metrics; 0 = off")
    log_level: str = Field("INFO", pattern="^(DEBUG|INFO|WARNING|ERROR)$")
    shutdown_grace_seconds: float = Field(10.0, gt=0, le=300)
    health_check_interval_seconds: float = Field(2.0, gt=0, le=60)
    # The largest request message the server accepts; bigger ones are refused by gRPC itself with
    # RESOURCE_EXHAUSTED before anything is parsed. Sized per service from its largest legitimate
    # request: every request of users, orders and analytics fits in a few KB (ids, an e-mail, a
    # 128-character password, a 100-character name); promocodes overrides it.
    grpc_max_receive_bytes: int = Field(64 * 1024, ge=4096, le=16 * 1024 * 1024)
    # Mutual TLS (promo_libs.grpc.tls): this workload's certificate, key and the CA bundle it
    # trusts. No defaults: serving, or calling another service, refuses to start without them
    # (commands that open no gRPC port, such as `migrate` or a replay, do not need them).
    grpc_tls_cert_file: Path | None = None
    grpc_tls_key_file: Path | None = None
    grpc_tls_ca_file: Path | None = None
    # Only grpc.health.v1, plaintext, for Kubernetes' gRPC probes (which present no
    # certificate). 0 = not served.
    grpc_health_port: int = Field(0, ge=0, le=65535)
    # Server reflection (for grpcurl), callable by operators only; off in production.
    grpc_reflection: bool = True
    # User tokens (promo_libs.user_tokens): the public keys that verify them. Without it, no
    # call on a user's behalf is accepted (the storefront's user-scoped calls are refused).
    user_token_jwks_file: Path | None = None
    user_token_issuer: str = Field("promo-users", min_length=1)
    user_token_audience: str = Field("promo", min_length=1)
    # Server-side bounds: RPCs served at once (more are refused), and the longest any call may
    # run, whatever deadline its caller set (none included).
    grpc_max_concurrent_rpcs: int = Field(4096, ge=1, le=100_000)
    grpc_max_deadline_seconds: float = Field(120.0, gt=0, le=3600)
    # Rate limits: (rate per second, burst) replacing a scope's default in the service's table
    # (promo_libs.rate_limit), as JSON, e.g. {"email": [0.2, 10]}.
    rate_limit_overrides: dict[str, tuple[float, int]] = Field(default={})
    # Callers are identified by the SPIFFE ID of their certificate; only this trust domain's.
    spiffe_trust_domain: str = Field("promo.local", pattern=r"^[a-z0-9._-]+$")

    def tls_paths(self) -> TlsPaths:
        """The mTLS files, or a configuration error naming what is missing."""
        missing = [
            name.upper()
            for name in ("grpc_tls_cert_file", "grpc_tls_key_file", "grpc_tls_ca_file")
            if getattr(self, name) is None
        ]
        if missing:
            raise SystemExit(
                f"configuration error: {', '.join(missing)} must be set: every gRPC port and "
                "every call between services uses mutual TLS"
            )
        assert self.grpc_tls_cert_file and self.grpc_tls_key_file and self.grpc_tls_ca_file
        return TlsPaths(self.grpc_tls_cert_file, self.grpc_tls_key_file, self.grpc_tls_ca_file)


class MongoSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    # TLS to MongoDB is the driver's own URI options (tls=true, tlsCAFile=..., and
    # tlsCertificateKeyFile=... for x.509 client authentication), so it needs no setting here.
    # No default: the URI carries the service's own user and password (never logged whole).
    mongodb_uri: str = Field(..., min_length=10)
    mongodb_db_name: str = Field(..., min_length=1, max_length=63)
    mongodb_timeout_ms: int = Field(5000, ge=100, le=120_000)
    mongodb_max_pool_size: int = Field(50, ge=1, le=1000)


class RedisSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    redis_host: str = "localhost"
    redis_port: int = Field(6379, ge=1, le=65535)
    # The ACL user (Redis 6+); unset: the `default` user (REDIS_PASSWORD alone, requirepass).
    redis_username: str | None = Field(None, min_length=1, max_length=128)
    # Unset or empty: a Redis without authentication. Not required, because a service's schema
    # commands (`migrate`) load its settings without touching Redis, and the migrations Job
    # gets no Redis credentials (least privilege); the manifests set it for every server.
    redis_password: SecretStr | None = None
    # Redis Cluster: REDIS_HOST:REDIS_PORT is then one seed node, the rest is discovered.
    redis_cluster: bool = False
    # TLS: the server verified against REDIS_TLS_CA_FILE, its name against REDIS_HOST; with a
    # certificate and key, the client authenticates too (Redis' tls-auth-clients). redis-py
    # reads the files once per pooled connection: a rotated client certificate needs a restart.
    redis_tls: bool = False
    redis_tls_ca_file: Path | None = None
    redis_tls_cert_file: Path | None = None
    redis_tls_key_file: Path | None = None
    # The server runs `appendonly yes` and `appendfsync always`, as its operator states: the
    # outbox's durability proof on a Redis < 7.2 (no WAITAOF) when this process's ACL user may
    # not run CONFIG GET to read it (promo_libs.bus). Only the local stack sets it; Redis 7.2+
    # ignores it (WAITAOF proves each pass).
    redis_appendfsync_always: bool = False

    @field_validator("redis_password", mode="after")
    @classmethod
    def _empty_is_none(cls, password: SecretStr | None) -> SecretStr | None:
        return password if password is not None and password.get_secret_value() else None

    @model_validator(mode="after")
    def _tls_files_need_tls(self) -> RedisSettings:
        _check_tls_files(
            "REDIS",
            self.redis_tls,
            self.redis_tls_ca_file,
            self.redis_tls_cert_file,
            self.redis_tls_key_file,
        )
        return self


class OutboxSettings(RedisSettings):
    """A service that writes events: the bus its outbox relay publishes to."""

    # The relay's wait between passes when nothing was written (a write wakes it at once).
    outbox_relay_idle_seconds: float = Field(0.5, gt=0, le=60)


class MongoServiceSettings(ServiceSettings, MongoSettings, OutboxSettings):
    """A service that owns a MongoDB database and publishes its changes as events (users,
    promocodes, orders): what the service kit's commands need (promo_libs.kit)."""


class ClickHouseSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    clickhouse_host: str = "localhost"
    clickhouse_port: int = Field(8123, ge=1, le=65535)
    clickhouse_database: str = Field("analytics", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    # Required, no defaults: each workload states its own user (reader, writer or migrator)
    # and password. An empty password has to be set explicitly (a server without one).
    clickhouse_user: str = Field(..., min_length=1, max_length=128)
    clickhouse_password: SecretStr = Field(...)
    # HTTPS to CLICKHOUSE_PORT (ClickHouse's https_port, 8443 by default), the server verified
    # against CLICKHOUSE_TLS_CA_FILE (the system's CAs when unset) and its name against the host.
    # The bundle is read when the client is made (a restart picks up a new one).
    clickhouse_secure: bool = False
    clickhouse_tls_ca_file: Path | None = None

    @model_validator(mode="after")
    def _tls_files_need_tls(self) -> ClickHouseSettings:
        _check_tls_files("CLICKHOUSE", self.clickhouse_secure, self.clickhouse_tls_ca_file)
        return self

    # How long an idle HTTP connection is kept for reuse. It must stay below the server's
    # keep_alive_timeout (3 s by default): a connection the server has already closed fails
    # the next request sent on it with "Server disconnected".
    clickhouse_keepalive_seconds: float = Field(2.0, gt=0, le=3600)


def _check_tls_files(
    store: str, enabled: bool, ca: Path | None, cert: Path | None = None, key: Path | None = None
) -> None:
    """TLS file settings mean nothing without TLS on (a silent plaintext connection would be
    worse than refusing to start), and a certificate goes with its key."""
    if not enabled and any(path is not None for path in (ca, cert, key)):
        switch = "CLICKHOUSE_SECURE" if store == "CLICKHOUSE" else f"{store}_TLS"
        raise ValueError(f"{store}_TLS_*_FILE is set but {switch} is false")
    if (cert is None) != (key is None):
        raise ValueError(f"{store}_TLS_CERT_FILE and {store}_TLS_KEY_FILE go together")


SettingsT = TypeVar("SettingsT", bound=BaseSettings)


def redacted_uri(uri: str) -> str:
    """`uri` fit for a log line or an error message: the password of its user info (and any
    query option that may hold a secret) replaced by `***`. A URI is never logged otherwise."""
    scheme, sep, rest = uri.partition("://")
    if not sep:
        return "***"
    authority, slash, tail = rest.partition("/")
    userinfo, at, hosts = authority.rpartition("@")
    if at:
        user = userinfo.partition(":")[0]
        authority = f"{user}:***@{hosts}"
    path, question, query = tail.partition("?")
    if question:
        options = []
        for option in query.split("&"):
            key, _, _ = option.partition("=")
            secret = any(word in key.lower() for word in ("password", "secret", "token", "key"))
            options.append(f"{key}=***" if secret else option)
        path = f"{path}?{'&'.join(options)}"
    return f"{scheme}://{authority}{slash}{path}"


def load_settings(settings_class: type[SettingsT]) -> SettingsT:
    """Reads the environment into `settings_class`, exiting with a clear message when it can't."""
    try:
        return settings_class()
    except ValidationError as exc:
        lines = [f"configuration error in {settings_class.__name__}:"]
        for error in exc.errors():
            variable = "_".join(str(part) for part in error["loc"]).upper()
            lines.append(f"  {variable}: {error['msg']}")
        lines.append("see .env.example for every variable and its default")
        print("\n".join(lines), file=sys.stderr)
        raise SystemExit(2) from None
