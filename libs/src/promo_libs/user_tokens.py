"""User tokens: JWTs (ES256) that say which end user a call is made for (DESIGN.md I7).

UserService signs one at log-in (AuthenticateUser) with its private key; every service verifies
them against the public keys of a JWKS file, by the token's `kid`. A token is accepted only
with a trusted signature, our issuer and audience, and an expiry in the future (a minute of
clock skew allowed). The JWKS file is re-read when it changes, so keys rotate without restart:
publish the new key in the JWKS first, then sign with it.

No grpc here: the interceptor (promo_libs.grpc.interceptors) reads the `authorization`
metadata and calls `verify`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from promo_libs import errors

ALGORITHM = "ES256"
LEEWAY_SECONDS = 60


def public_jwk(key: ec.EllipticCurvePublicKey) -> dict[str, Any]:
    """The JWK of `key`, its `kid` the RFC 7638 thumbprint (so signer and verifier agree)."""
    jwk: dict[str, Any] = json.loads(ECAlgorithm.to_jwk(key))
    canonical = json.dumps({k: jwk[k] for k in ("crv", "kty", "x", "y")}, separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode()).digest()
    kid = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    return {**jwk, "kid": kid, "alg": ALGORITHM, "use": "sig"}


class UserTokenIssuer:
    """Signs user tokens with the private key in `key_file` (PEM, P-256)."""

    def __init__(self, key_file: Path, issuer: str, audience: str, ttl: timedelta) -> None:
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError("the user token signing key must be an EC P-256 key")
        self._key = key
        self._kid = public_jwk(key.public_key())["kid"]
        self._issuer, self._audience, self._ttl = issuer, audience, ttl

    def issue(self, user_id: str, now: datetime) -> tuple[str, datetime]:
        """A token for `user_id`, and when it expires."""
        expires = now + self._ttl
        claims = {
            "sub": user_id,
            "iss": self._issuer,
            "aud": self._audience,
            "iat": int(now.timestamp()),
            "exp": int(expires.timestamp()),
        }
        token = jwt.encode(claims, self._key, algorithm=ALGORITHM, headers={"kid": self._kid})
        return token, expires.replace(microsecond=0)


class UserTokenVerifier:
    """Verifies user tokens against the keys of a JWKS file; returns their subject."""

    def __init__(self, jwks_file: Path, issuer: str, audience: str) -> None:
        self._file, self._issuer, self._audience = jwks_file, issuer, audience
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._keys: dict[str, Any] = {}
        self._load()

    def _load(self) -> None:
        info = self._file.stat()
        stamp = (info.st_mtime_ns, info.st_size)
        if stamp == self._stamp:
            return
        keys = {}
        for entry in json.loads(self._file.read_text()).get("keys", []):
            if entry.get("kid") and entry.get("kty") == "EC":
                keys[entry["kid"]] = ECAlgorithm.from_jwk(json.dumps(entry))
        self._keys, self._stamp = keys, stamp

    def verify(self, token: str) -> str:
        """The token's subject (a user id); errors.Unauthenticated when it is not valid."""
        try:
            kid = jwt.get_unverified_header(token).get("kid", "")
            with self._lock:
                self._load()
                key = self._keys.get(kid)
            if key is None:
                raise jwt.InvalidTokenError("unknown key")
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],  # never what the token's header says
                audience=self._audience,
                issuer=self._issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["sub", "exp", "iss", "aud"]},
            )
        except (jwt.InvalidTokenError, OSError, ValueError):
            raise errors.Unauthenticated(
                "the user token is not valid", reason="INVALID_USER_TOKEN"
            ) from None
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject:
            raise errors.Unauthenticated(
                "the user token has no subject", reason="INVALID_USER_TOKEN"
            )
        return subject
