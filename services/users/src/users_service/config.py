"""The user service's settings: the shared ones plus password hashing parameters."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from promo_libs.config import MongoServiceSettings


class UsersSettings(MongoServiceSettings):
    grpc_port: int = Field(50051, ge=1, le=65535)
    metrics_port: int = Field(9101, ge=0, le=65535)
    mongodb_db_name: str = Field("promo_users", min_length=1, max_length=63)
    # argon2id, RFC 9106's second recommended option (64 MiB, 3 passes, 4 lanes) by default.
    argon2_time_cost: int = Field(3, ge=1, le=20)
    argon2_memory_kib: int = Field(65536, ge=8192, le=1048576)
    argon2_parallelism: int = Field(4, ge=1, le=16)
    argon2_max_concurrent: int = Field(4, ge=1, le=64)
    # Signs the user tokens AuthenticateUser hands out (PEM, EC P-256); its public key must be
    # in the USER_TOKEN_JWKS_FILE of every service. Unset: log-in returns no token.
    user_token_signing_key_file: Path | None = None
    user_token_ttl_seconds: int = Field(900, ge=60, le=86400)
