"""The local stack: MongoDB (nx-27017), Redis and ClickHouse, each managed or external."""

from __future__ import annotations

import atexit
import json
import os
import shlex
import subprocess
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from devstack.pki import CALLER_IDENTITIES, DevPki, tls_env
from devstack.probes import clickhouse_query
from devstack.redis_acl import RedisUsers
from devstack.servers import (
    CLICKHOUSE_DATABASE,
    ClickHouseServer,
    ExternalServer,
    ManagedServer,
    MongoServer,
    RedisServer,
    Server,
)
from devstack.service import ServiceProcess
from devstack.state import PidRegistry, StateLock, default_state_dir
from promo_libs.config import ClickHouseSettings, RedisSettings

SERVER_NAMES = ("mongo", "redis", "clickhouse")
ENV_FILE = "stack.env"
# The workload a service runs as, by the module `python -m` starts (promo_libs.identity).
_MODULE_IDENTITIES = {
    "users_service": "users",
    "promocodes_service": "promocodes",
    "orders_service": "orders",
    "analytics_service": "analytics",
    "sync_consumer": "sync-consumer",
}


class Stack:
    """Three servers and the environment that points services at them.

    Build it with `Stack.from_environ()`; `start()` launches the managed servers together and
    waits until each answers, `stop()` stops them. Ports stay the same for the stack's life,
    across `stop_server`/`start_server`, and are reused by the next run on the same state folder
    when still free.
    """

    def __init__(self, state_dir: Path, servers: Mapping[str, Server]) -> None:
        self.state_dir = state_dir
        self.servers = dict(servers)
        # The development CA: every service and every caller gets its certificate here.
        self.pki = DevPki(state_dir / "pki")
        self.registry = PidRegistry(state_dir)
        self._lock = StateLock(state_dir)
        self._started = False
        for server in self.servers.values():
            if isinstance(server, ManagedServer):
                server.registry = self.registry

    @classmethod
    def from_environ(
        cls, state_dir: Path | None = None, environ: Mapping[str, str] | None = None
    ) -> Stack:
        state = (state_dir or default_state_dir()).resolve()
        env = os.environ if environ is None else environ
        ports = _read_ports(state)
        servers: dict[str, Server] = {}
        if env.get("MONGODB_URI"):
            servers["mongo"] = ExternalServer("mongo", {"MONGODB_URI": env["MONGODB_URI"]})
        else:
            servers["mongo"] = MongoServer(state, None, ports.get("mongo"))
        if env.get("REDIS_HOST"):
            # As its variables say: no REDIS_PASSWORD there means a Redis without one.
            redis_env = {
                "REDIS_HOST": env["REDIS_HOST"],
                "REDIS_PORT": env.get("REDIS_PORT", "6379"),
                "REDIS_PASSWORD": env.get("REDIS_PASSWORD", ""),
            }
            if env.get("REDIS_USERNAME"):
                redis_env["REDIS_USERNAME"] = env["REDIS_USERNAME"]
            servers["redis"] = ExternalServer("redis", redis_env)
        else:
            # The dev overlay's ACL users, each service as its own (devstack.redis_acl).
            servers["redis"] = RedisServer(state, None, ports.get("redis"), users=RedisUsers(state))
        database = env.get("CLICKHOUSE_DATABASE", CLICKHOUSE_DATABASE)
        if env.get("CLICKHOUSE_HOST"):
            servers["clickhouse"] = ExternalServer(
                "clickhouse",
                {
                    "CLICKHOUSE_HOST": env["CLICKHOUSE_HOST"],
                    "CLICKHOUSE_PORT": env.get("CLICKHOUSE_PORT", "8123"),
                    "CLICKHOUSE_DATABASE": database,
                    "CLICKHOUSE_USER": env.get("CLICKHOUSE_USER", "default"),
                    "CLICKHOUSE_PASSWORD": env.get("CLICKHOUSE_PASSWORD", ""),
                },
            )
        else:
            servers["clickhouse"] = ClickHouseServer(
                state, None, ports.get("clickhouse_http"), ports.get("clickhouse_tcp"), database
            )
        return cls(state, servers)

    # --- what services need -------------------------------------------------------------------

    @property
    def env(self) -> dict[str, str]:
        merged: dict[str, str] = {}
        for name in SERVER_NAMES:
            merged.update(self.servers[name].env())
        return merged

    @property
    def mongo_uri(self) -> str:
        return self.env["MONGODB_URI"]

    @property
    def redis_host(self) -> str:
        return self.env["REDIS_HOST"]

    @property
    def redis_port(self) -> int:
        return int(self.env["REDIS_PORT"])

    @property
    def redis_password(self) -> str | None:
        """The administrator's (`default`) password on the stack's own Redis, for a test's or
        a tool's own client; for a Redis from the environment, REDIS_PASSWORD as it was given
        (None: it has none)."""
        server = self.servers["redis"]
        if isinstance(server, RedisServer):
            return server.admin_password
        return self.env.get("REDIS_PASSWORD") or None

    def redis_user_env(self, identity: str) -> dict[str, str]:
        """REDIS_USERNAME/REDIS_PASSWORD of `identity`'s own user on the stack's Redis, for a
        service or a tool run as that workload; nothing when it has none (or for a Redis from
        the environment)."""
        server = self.servers["redis"]
        return server.user_env(identity) if isinstance(server, RedisServer) else {}

    def redis_settings(self) -> RedisSettings:
        """promo_libs settings for an administrator's client of the stack's Redis."""
        password = self.redis_password
        return RedisSettings.model_validate(
            {
                "redis_host": self.redis_host,
                "redis_port": self.redis_port,
                "redis_password": SecretStr(password) if password is not None else None,
            }
        )

    @property
    def clickhouse_host(self) -> str:
        return self.env["CLICKHOUSE_HOST"]

    @property
    def clickhouse_port(self) -> int:
        return int(self.env["CLICKHOUSE_PORT"])

    def clickhouse_settings(self, database: str, user: str | None = None) -> ClickHouseSettings:
        """promo_libs settings for a client of `database`: as the administrator, or as one
        of the stack's own ClickHouse users (ClickHouseServer.USERS, MIGRATOR)."""
        env = self.env
        if user is not None:
            env |= self.managed_clickhouse().user_env(user)
        return ClickHouseSettings.model_validate(
            {
                "clickhouse_host": env["CLICKHOUSE_HOST"],
                "clickhouse_port": int(env["CLICKHOUSE_PORT"]),
                "clickhouse_database": database,
                "clickhouse_user": env["CLICKHOUSE_USER"],
                "clickhouse_password": SecretStr(env["CLICKHOUSE_PASSWORD"]),
            }
        )

    def clickhouse_query(
        self, sql: str, timeout: float = 10.0, settings: Mapping[str, str] | None = None
    ) -> str:
        """One statement over HTTP as the administrator (devstack.probes.clickhouse_query)."""
        env = self.env
        return clickhouse_query(
            env["CLICKHOUSE_HOST"],
            int(env["CLICKHOUSE_PORT"]),
            sql,
            timeout,
            settings,
            user=env["CLICKHOUSE_USER"],
            password=env["CLICKHOUSE_PASSWORD"],
        )

    def managed_clickhouse(self) -> ClickHouseServer:
        server = self.servers["clickhouse"]
        if not isinstance(server, ClickHouseServer):
            raise RuntimeError("ClickHouse comes from the environment: its users are its own")
        return server

    def is_managed(self, name: str) -> bool:
        return isinstance(self.servers[name], ManagedServer)

    def managed(self) -> list[ManagedServer]:
        return [s for n in SERVER_NAMES if isinstance(s := self.servers[n], ManagedServer)]

    # --- life cycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Lock the state folder, clear a killed run's leftovers, start and wait for all."""
        if self._started:
            return
        self._lock.acquire()
        self._started = True
        atexit.register(self.stop)
        try:
            for leftover in self.registry.kill_stale():
                print(f"devstack: stopped {leftover} left by an earlier run")
            for identity in CALLER_IDENTITIES:
                self.pki.files(identity)
            print(f"devstack: certificates (development CA) in {self.pki.folder}", flush=True)
            if leftovers := self.pki.earlier_layout_files():
                print(
                    f"devstack: {len(leftovers)} files directly in {self.pki.folder} are an "
                    "earlier layout's (keys of every identity and the CA's in one folder), "
                    "unused now: remove them",
                    flush=True,
                )
            for server in self.managed():
                print(f"devstack: starting {server.name} at {server.address()}", flush=True)
                server.launch()
            for server in self.managed():
                server.wait_ready()
                print(f"devstack: {server.name} is up at {server.address()}", flush=True)
            for other in self.servers.values():
                if not other.managed:
                    print(f"devstack: using {other.name} from the environment: {other.address()}")
            self._remember_ports()
            self.write_env_file()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop every managed server (idempotent) and release the state folder."""
        if not self._started:
            return
        for server in reversed(self.managed()):
            if server.running:
                print(f"devstack: stopping {server.name}", flush=True)
            server.stop()
        (self.state_dir / ENV_FILE).unlink(missing_ok=True)
        self._lock.release()
        self._started = False
        atexit.unregister(self.stop)

    def __enter__(self) -> Stack:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def managed_server(self, name: str) -> ManagedServer:
        server = self.servers[name]
        if not isinstance(server, ManagedServer):
            raise RuntimeError(f"{name} comes from the environment; devstack cannot stop it")
        return server

    def stop_server(self, name: str) -> None:
        """SIGTERM one server and wait; its port and data are kept for `start_server`."""
        self.managed_server(name).stop()

    def kill_server(self, name: str) -> None:
        """SIGKILL one server (a crash); `start_server` brings it back."""
        self.managed_server(name).kill()

    def start_server(self, name: str) -> None:
        """Start one server again on the same port and data, and wait until it answers."""
        self.managed_server(name).start()

    @contextmanager
    def server_down(self, name: str) -> Iterator[None]:
        """`with stack.server_down("mongo"): ...` stops it, and starts it again on leaving."""
        self.stop_server(name)
        try:
            yield
        finally:
            self.start_server(name)

    def service(
        self,
        name: str,
        argv: Sequence[str],
        grpc_port: int,
        extra_env: Mapping[str, str] | None = None,
        *,
        identity: str | None = None,
    ) -> ServiceProcess:
        """A ServiceProcess with this stack's env (plus `extra_env`), logging under the state.

        It runs with the certificate of `identity` (by default the workload its `-m` module
        is, else `name`): what it presents to its callers and to the services it calls.
        """
        if identity is None:
            module = argv[argv.index("-m") + 1] if "-m" in argv[:-1] else ""
            identity = _MODULE_IDENTITIES.get(module, name)
        signing_key, jwks = self.pki.user_token_keys()
        tokens = {"USER_TOKEN_JWKS_FILE": str(jwks)}
        if identity == "users":  # the one signer of user tokens
            tokens["USER_TOKEN_SIGNING_KEY_FILE"] = str(signing_key)
        # GRPC_PORT is the variable every service of the project listens on.
        clickhouse = self.servers["clickhouse"]
        managed_clickhouse = isinstance(clickhouse, ClickHouseServer)
        # On the stack's own ClickHouse, each workload as its own user (analytics read-only,
        # sync-consumer's serving process without DDL, its schema commands as the migrator);
        # a ClickHouse from the environment is used as its variables say.
        # A workload without a ClickHouse user gets no ClickHouse credentials at all (never
        # the administrator's, which the stack's env carries for operators' tools).
        base_env = dict(self.env)
        clickhouse_user: dict[str, str] = {}
        subcommand = _subcommand(argv)
        if isinstance(clickhouse, ClickHouseServer):
            del base_env["CLICKHOUSE_USER"], base_env["CLICKHOUSE_PASSWORD"]
            if identity == "sync-consumer" and subcommand in _SCHEMA_COMMANDS:
                clickhouse_user = clickhouse.user_env(ClickHouseServer.MIGRATOR)
            elif identity in ClickHouseServer.USERS:
                clickhouse_user = clickhouse.user_env(ClickHouseServer.USERS[identity])
        # Its own ACL user on the stack's Redis; nothing for a workload that has none, nor for
        # one pointed at another Redis (a test's cluster: REDIS_HOST in `extra_env`; a proxy
        # in front of this one changes the port only and keeps the credentials).
        redis_user = {} if "REDIS_HOST" in (extra_env or {}) else self.redis_user_env(identity)
        env = {
            **os.environ,
            **base_env,
            **redis_user,
            **clickhouse_user,
            **tls_env(self.pki.files(identity)),
            **tokens,
            "GRPC_PORT": str(grpc_port),
            **(extra_env or {}),
        }
        log_dir = self.state_dir / "services"
        before_start: Callable[[], None] | None = None
        if (
            managed_clickhouse
            and identity == "sync-consumer"
            and subcommand is None
            and "-m" in argv
        ):
            # The serving consumer may not change the schema: as the promo-migrations Job does
            # before the Deployment, the migrator applies it first (idempotent). Now if the
            # servers are up, else when the service starts (after them).
            migrate_argv = [*argv[: list(argv).index("-m") + 2], "migrate"]
            assert isinstance(clickhouse, ClickHouseServer)
            migrate_env = {**env, **clickhouse.user_env(ClickHouseServer.MIGRATOR)}
            migrate_log = log_dir / f"{name}.migrate.log"

            def migrate() -> None:
                self._migrate_clickhouse(migrate_argv, migrate_env, migrate_log)

            if self._started:
                migrate()
            else:
                before_start = migrate
        return ServiceProcess(
            name,
            argv,
            env,
            grpc_port,
            log_dir=log_dir,
            registry=self.registry,
            pki=self.pki,
            before_start=before_start,
        )

    @staticmethod
    def _migrate_clickhouse(argv: Sequence[str], env: Mapping[str, str], log: Path) -> None:
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            done = subprocess.run(
                argv, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=120, check=False
            )
        if done.returncode != 0:
            raise RuntimeError(f"ClickHouse migrations failed (exit {done.returncode}): see {log}")

    # --- files --------------------------------------------------------------------------------

    def env_lines(self) -> list[str]:
        return [f"export {key}={shlex.quote(value)}" for key, value in self.env.items()]

    def write_env_file(self) -> Path:
        path = self.state_dir / ENV_FILE
        path.touch(mode=0o600)
        path.write_text("\n".join(self.env_lines()) + "\n")
        return path

    def _remember_ports(self) -> None:
        ports: dict[str, int] = {}
        for server in self.managed():
            if isinstance(server, ClickHouseServer):
                ports["clickhouse_http"] = server.http_port
                ports["clickhouse_tcp"] = server.tcp_port
            elif isinstance(server, MongoServer | RedisServer):
                ports[server.name] = server.port
        (self.state_dir / "ports.json").write_text(json.dumps(ports, indent=2))


# sync_consumer's commands that change the schema, run as the migrator.
_SCHEMA_COMMANDS = frozenset({"migrate", "rebuild"})


def _subcommand(argv: Sequence[str]) -> str | None:
    """The command after `-m <module>` (None: serve)."""
    rest = list(argv[argv.index("-m") + 2 :]) if "-m" in argv[:-1] else []
    words = [word for word in rest if not word.startswith("-")]
    return words[0] if words and words[0] != "serve" else None


def read_env_file(state_dir: Path | None = None) -> dict[str, str]:
    """The environment of the stack running on `state_dir` (FileNotFoundError if none)."""
    path = (state_dir or default_state_dir()) / ENV_FILE
    env: dict[str, str] = {}
    for line in path.read_text().splitlines():
        words = shlex.split(line)
        if len(words) == 2 and words[0] == "export" and "=" in words[1]:
            key, _, value = words[1].partition("=")
            env[key] = value
    return env


def _read_ports(state_dir: Path) -> dict[str, int]:
    try:
        data: Any = json.loads((state_dir / "ports.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): int(v) for k, v in data.items() if isinstance(v, int)}
