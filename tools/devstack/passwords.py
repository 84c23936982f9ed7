"""Passwords the local stack generates for its servers' users, kept in its state folder.

Random, generated once per state folder into one JSON file per server (0600, written whole
through a rename), so a restarted stack keeps its users' passwords; a user added later gets
one on first use. The servers' own configurations get SHA-256 hashes only (devstack.redis_acl,
devstack.servers.ClickHouseServer), and devstack never prints a password.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from collections.abc import Sequence
from pathlib import Path


class GeneratedPasswords:
    def __init__(self, file: Path, names: Sequence[str]) -> None:
        self.file = file
        self.names = list(names)

    def passwords(self) -> dict[str, str]:
        """user -> password, generated on first use (and for a user added later)."""
        known: dict[str, str] = {}
        if self.file.exists():
            known = {str(k): str(v) for k, v in json.loads(self.file.read_text()).items()}
        missing = [name for name in self.names if name not in known]
        if missing:
            known |= {name: secrets.token_urlsafe(24) for name in missing}
            self.file.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.file.with_name(f".{self.file.name}.{os.getpid()}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                json.dump(known, handle)
            tmp.replace(self.file)
        return known

    def password(self, user: str) -> str:
        return self.passwords()[user]

    def sha256_hex(self, user: str) -> str:
        return hashlib.sha256(self.password(user).encode()).hexdigest()
