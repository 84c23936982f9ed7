"""Configuration from the environment: one loader, validated at start-up.

Each service declares a settings class composed from the mixins below and calls
`load_settings(TheClass)`. A missing or malformed variable stops the process with a message that
names the variable, instead of failing later on first use. Secrets have no defaults.
"""

from __future__ import annotations

import sys
from typing import TypeVar

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict


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


class MongoSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    mongodb_uri: str = Field("mongodb://localhost:27017", min_length=10)
    mongodb_db_name: str = Field(..., min_length=1, max_length=63)
    mongodb_timeout_ms: int = Field(5000, ge=100, le=120_000)
    mongodb_max_pool_size: int = Field(50, ge=1, le=1000)


class RedisSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    redis_host: str = "localhost"
    redis_port: int = Field(6379, ge=1, le=65535)
    redis_password: SecretStr | None = None
    # Redis Cluster: REDIS_HOST:REDIS_PORT is then one seed node, the rest is discovered.
    redis_cluster: bool = False


class OutboxSettings(RedisSettings):
    """A service that writes events: the bus its outbox relay publishes to."""

    # The relay's wait between passes when nothing was written (a write wakes it at once).
    outbox_relay_idle_seconds: float = Field(0.5, gt=0, le=60)


class ClickHouseSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    clickhouse_host: str = "localhost"
    clickhouse_port: int = Field(8123, ge=1, le=65535)
    clickhouse_database: str = Field("analytics", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    clickhouse_user: str = "default"
    clickhouse_password: SecretStr = SecretStr("")
    # How long an idle HTTP connection is kept for reuse. It must stay below the server's
    # keep_alive_timeout (3 s by default): a connection the server has already closed fails
    # the next request sent on it with "Server disconnected".
    clickhouse_keepalive_seconds: float = Field(2.0, gt=0, le=3600)


SettingsT = TypeVar("SettingsT", bound=BaseSettings)


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
