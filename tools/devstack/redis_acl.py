"""The local Redis' users: the dev overlay's ACL rules, each with a password generated here.

The rules are read from deploy/k8s/overlays/dev/redis.yaml (the `--user` arguments of its
redis-server), so the local stack refuses exactly what the cluster refuses: each service logs in
as its own user, limited to its streams and commands (tests/integration/test_redis_acl.py proves
the rules against the services' Redis code). `default`, the administrator (the test suite's
own Redis clients, devstack's probes), gets a password too: nothing logs in without one.

Passwords: random, generated once per state folder into `<state>/redis-users.json` (0600), and
written into the server's configuration only as SHA-256 hashes (`#<hex>`), so neither a
config file nor a process list ever shows one; devstack never prints them.

Redis 7.0 (the local server) has no WAITAOF, which the rules grant for the deployments'
Redis 7.2+: commands the server does not know are dropped from the local rules, and only
those named in NEWER_COMMANDS (anything else unknown is an error). The outbox's durability
check then falls back to CONFIG GET, which no service user may run (it reads every setting,
the administrator's password included); devstack, which starts this Redis with
`appendonly yes` and `appendfsync always`, says so instead (REDIS_APPENDFSYNC_ALWAYS, see
promo_libs.bus.RedisStreamPublisher), and the check asks INFO whether the append-only file is
on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]

from devstack.passwords import GeneratedPasswords

DEV_REDIS_MANIFEST = (
    Path(__file__).resolve().parents[2] / "deploy" / "k8s" / "overlays" / "dev" / "redis.yaml"
)
ADMIN = "default"
# Granted in the manifest for Redis 7.2+, unknown to older servers: dropped there, only these.
NEWER_COMMANDS = {(7, 2): frozenset({"+waitaof"})}


def manifest_rules(manifest: Path = DEV_REDIS_MANIFEST) -> dict[str, list[str]]:
    """user -> its rule's tokens, without the password (the manifest's `>$(VARIABLE)`)."""
    documents: list[Any] = [d for d in yaml.safe_load_all(manifest.read_text()) if d]
    (statefulset,) = [d for d in documents if d.get("kind") == "StatefulSet"]
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    command: list[str] = container["command"]
    rules: dict[str, list[str]] = {}
    for n, argument in enumerate(command):
        if argument == "--user":
            name, *tokens = command[n + 1].split()
            rules[name] = [t for t in tokens if not t.startswith(">")]
    return rules


def local_rules(
    version: tuple[int, int], manifest: Path = DEV_REDIS_MANIFEST
) -> dict[str, list[str]]:
    """The manifest's rules as a Redis of `version` accepts them."""
    unknown = frozenset().union(
        *(cmds for since, cmds in NEWER_COMMANDS.items() if version < since)
    )
    return {
        name: [t for t in tokens if t.lower() not in unknown]
        for name, tokens in manifest_rules(manifest).items()
    }


class RedisUsers:
    """The generated passwords of one state folder, and the configuration they go into."""

    def __init__(self, state_dir: Path, manifest: Path = DEV_REDIS_MANIFEST) -> None:
        self.manifest = manifest
        self.names = [ADMIN, *manifest_rules(manifest)]
        self._passwords = GeneratedPasswords(state_dir / "redis-users.json", self.names)
        self.file = self._passwords.file

    def passwords(self) -> dict[str, str]:
        return self._passwords.passwords()

    def password(self, user: str) -> str:
        return self._passwords.password(user)

    def service_env(self, user: str) -> dict[str, str]:
        """REDIS_USERNAME/REDIS_PASSWORD for a service that has a user here, else nothing: a
        workload without one is given no Redis credentials at all (never the administrator's)."""
        if user == ADMIN or user not in self.names:
            return {}
        return {"REDIS_USERNAME": user, "REDIS_PASSWORD": self.password(user)}

    def config_lines(self, version: tuple[int, int]) -> list[str]:
        """redis.conf `user` lines: the administrator with every right, each service with its
        manifest rule, every password as its SHA-256 hash."""

        def hashed(user: str) -> str:
            return "#" + self._passwords.sha256_hex(user)

        lines = [f"user {ADMIN} on {hashed(ADMIN)} ~* &* +@all"]
        for name, tokens in local_rules(version, self.manifest).items():
            lines.append(f"user {name} reset {hashed(name)} {' '.join(tokens)}")
        return lines
