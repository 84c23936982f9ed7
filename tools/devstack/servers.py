"""The three servers of the local stack: started here (managed) or given by the environment."""

from __future__ import annotations

import os
import re
import shutil
import string
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

from devstack.passwords import GeneratedPasswords
from devstack.ports import pick_port
from devstack.probes import (
    clickhouse_query,
    cluster_state,
    ping_clickhouse,
    ping_mongo,
    ping_redis,
)
from devstack.processes import ChildProcess
from devstack.redis_acl import ADMIN, RedisUsers
from devstack.state import PidRegistry
from promo_libs.config import TlsPaths

HOST = "127.0.0.1"
CLICKHOUSE_DATABASE = "analytics"
_TEMPLATES = Path(__file__).resolve().parent / "clickhouse"


class Server(ABC):
    """What the stack needs from a server, wherever it runs."""

    name: str
    managed: bool

    @abstractmethod
    def env(self) -> dict[str, str]:
        """The variables a service needs to reach this server."""

    @abstractmethod
    def ping(self) -> bool:
        """True when the server answers now."""

    @abstractmethod
    def address(self) -> str:
        """Human-readable address."""


class ExternalServer(Server):
    """A server named by the environment (MONGODB_URI, REDIS_HOST, CLICKHOUSE_HOST)."""

    managed = False

    def __init__(self, name: str, env: Mapping[str, str]) -> None:
        self.name = name
        self._env = dict(env)

    def env(self) -> dict[str, str]:
        return dict(self._env)

    def ping(self) -> bool:
        if self.name == "mongo":
            return ping_mongo(self._env["MONGODB_URI"])
        if self.name == "redis":
            return ping_redis(self._env["REDIS_HOST"], int(self._env["REDIS_PORT"]))
        return ping_clickhouse(self._env["CLICKHOUSE_HOST"], int(self._env["CLICKHOUSE_PORT"]))

    def address(self) -> str:
        if self.name == "mongo":
            scheme, _, rest = self._env["MONGODB_URI"].partition("://")
            return f"{scheme}://{rest.rpartition('@')[2]}"  # without credentials
        if self.name == "redis":
            return f"redis://{self._env['REDIS_HOST']}:{self._env['REDIS_PORT']}"
        return f"http://{self._env['CLICKHOUSE_HOST']}:{self._env['CLICKHOUSE_PORT']}"


class ManagedServer(Server):
    """A server run as a child process with its data under `<state>/<name>`; port kept for life."""

    managed = True
    ready_timeout = 30.0
    stop_timeout = 20.0

    def __init__(self, name: str, state_dir: Path, registry: PidRegistry | None) -> None:
        self.name = name
        self.state_dir = state_dir
        self.dir = state_dir / name
        self.registry = registry
        self._child: ChildProcess | None = None

    @abstractmethod
    def argv(self) -> list[str]: ...

    def server_logs(self) -> list[Path]:
        """Log files the server writes itself (shown with stdout when it fails)."""
        return []

    def prepare(self) -> None:
        """Create folders and config files before each start."""
        self.dir.mkdir(parents=True, exist_ok=True)

    def after_ready(self) -> None:
        """Runs once the server answers."""

    @property
    def child(self) -> ChildProcess | None:
        return self._child

    @property
    def running(self) -> bool:
        return self._child is not None and self._child.running

    def launch(self) -> None:
        """Start the process without waiting for it."""
        self.prepare()
        self._child = ChildProcess(
            self.name,
            self.argv(),
            log_path=self.dir / "stdout.log",
            extra_logs=self.server_logs(),
            registry=self.registry,
        )
        self._child.start()

    def wait_ready(self) -> None:
        assert self._child is not None, f"{self.name} was never launched"
        self._child.wait_ready(self.ping, self.ready_timeout, f"answer at {self.address()}")
        self.after_ready()

    def start(self) -> None:
        self.launch()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self._child is not None:
            self._child.stop(self.stop_timeout)

    def kill(self) -> None:
        if self._child is not None:
            self._child.kill()


class RedisServer(ManagedServer):
    """With `tls` (its certificate, key and the CA it trusts): TLS only, on `port`, and every
    client must present a certificate of that CA (Redis' tls-auth-clients yes). With `users`:
    the dev overlay's ACL users, and `default` (the administrator) password-protected
    (devstack.redis_acl); without, anyone connecting is `default` (a test's own server)."""

    def __init__(
        self,
        state_dir: Path,
        registry: PidRegistry | None,
        port: int | None = None,
        *,
        name: str = "redis",
        tls: TlsPaths | None = None,
        users: RedisUsers | None = None,
    ) -> None:
        super().__init__(name, state_dir, registry)
        self.port = pick_port(port)
        self.tls = tls
        self.users = users

    @property
    def admin_password(self) -> str | None:
        """What the administrator (`default`) logs in with; None: no password needed."""
        return self.users.password(ADMIN) if self.users is not None else None

    def user_env(self, user: str) -> dict[str, str]:
        """The credentials of `user` (a service's identity) here, if it has any."""
        return self.users.service_env(user) if self.users is not None else {}

    def prepare(self) -> None:
        super().prepare()
        if self.users is not None:
            lines = self.users.config_lines(redis_version(_which("redis-server")))
            # Hashes only, yet nobody else's business: the owner alone reads it.
            fd = os.open(self._config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write("\n".join(lines) + "\n")

    @property
    def _config(self) -> Path:
        return self.dir / "users.conf"

    def _listen(self) -> list[str]:
        if self.tls is None:
            return ["--port", str(self.port)]
        return [
            "--port", "0",  # no plaintext port at all
            "--tls-port", str(self.port),
            "--tls-cert-file", str(self.tls.cert),
            "--tls-key-file", str(self.tls.key),
            "--tls-ca-cert-file", str(self.tls.ca),
            "--tls-auth-clients", "yes",
        ]  # fmt: skip

    def argv(self) -> list[str]:
        config = [str(self._config)] if self.users is not None else []
        return [
            _which("redis-server"),
            *config,  # the configuration file comes first, then the options
            *self._listen(),
            "--bind", HOST,
            "--dir", str(self.dir),
            "--appendonly", "yes",
            # Every write fsynced before its reply: Redis 7.0 has no WAITAOF, and the outbox relay
            # clears an entry only once its event is durable (promo_libs.bus, I3).
            "--appendfsync", "always",
            "--daemonize", "no",
            "--logfile", str(self.dir / "redis.log"),
        ]  # fmt: skip

    def server_logs(self) -> list[Path]:
        return [self.dir / "redis.log"]

    def ping(self) -> bool:
        return ping_redis(HOST, self.port, tls=self.tls, password=self.admin_password)

    def address(self) -> str:
        return f"{'rediss' if self.tls else 'redis'}://{HOST}:{self.port}"

    def env(self) -> dict[str, str]:
        """What a client needs; with TLS, the server's bundle (a client adds its own
        certificate: REDIS_TLS_CERT_FILE and REDIS_TLS_KEY_FILE)."""
        env = {"REDIS_HOST": HOST, "REDIS_PORT": str(self.port)}
        if self.users is not None:
            # It runs appendonly yes + appendfsync always (argv), and its users may not run
            # CONFIG GET to see it: what the outbox's durability check needs on Redis < 7.2.
            env["REDIS_APPENDFSYNC_ALWAYS"] = "true"
        if self.tls is not None:
            env |= {"REDIS_TLS": "true", "REDIS_TLS_CA_FILE": str(self.tls.ca)}
        return env


class ClickHouseServer(ManagedServer):
    binary = "/usr/sbin/clickhouse-server"
    # The ClickHouse user each workload connects as (users.xml); no other workload gets any.
    USERS: ClassVar[dict[str, str]] = {"analytics": "promo_reader", "sync-consumer": "promo_writer"}
    # Who applies the schema: `sync_consumer migrate` and `rebuild` (DDL).
    MIGRATOR: ClassVar[str] = "promo_migrator"
    # Everything: devstack's set-up, the test suite's own clients, the operators' tools.
    ADMIN: ClassVar[str] = "default"

    def __init__(
        self,
        state_dir: Path,
        registry: PidRegistry | None,
        http_port: int | None = None,
        tcp_port: int | None = None,
        database: str = CLICKHOUSE_DATABASE,
        *,
        name: str = "clickhouse",
        tls: TlsPaths | None = None,
    ) -> None:
        super().__init__(name, state_dir, registry)
        self.http_port = pick_port(http_port)
        self.tcp_port = pick_port(tcp_port)
        self.database = database
        # With `tls`: HTTPS on https_port as well, with that certificate (the HTTP port stays
        # for devstack's own probes and set-up).
        self.tls = tls
        self.https_port = pick_port(None) if tls is not None else None
        self.users = GeneratedPasswords(
            state_dir / "clickhouse-users.json",
            [self.ADMIN, self.MIGRATOR, *self.USERS.values()],
        )

    def password(self, user: str) -> str:
        return self.users.password(user)

    def user_env(self, user: str) -> dict[str, str]:
        """CLICKHOUSE_USER/CLICKHOUSE_PASSWORD to connect as `user`."""
        return {"CLICKHOUSE_USER": user, "CLICKHOUSE_PASSWORD": self.password(user)}

    def prepare(self) -> None:
        for sub in ("data", "tmp", "user_files", "format_schemas", "log"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        values = {
            "dir": str(self.dir),
            "http_port": str(self.http_port),
            "tcp_port": str(self.tcp_port),
            **{f"{user}_sha256": self.users.sha256_hex(user) for user in self.users.names},
        }
        for name in ("config.xml", "users.xml"):
            template = string.Template((_TEMPLATES / name).read_text())
            (self.dir / name).write_text(template.substitute(values))
        overrides = self.dir / "config.d"
        overrides.mkdir(exist_ok=True)
        (overrides / "tls.xml").unlink(missing_ok=True)
        if self.tls is not None:
            template = string.Template((_TEMPLATES / "tls.xml").read_text())
            (overrides / "tls.xml").write_text(
                template.substitute(
                    https_port=str(self.https_port),
                    cert=str(self.tls.cert),
                    key=str(self.tls.key),
                    ca=str(self.tls.ca),
                )
            )

    def argv(self) -> list[str]:
        return [self.binary, f"--config-file={self.dir / 'config.xml'}"]

    def server_logs(self) -> list[Path]:
        return [self.dir / "log" / "clickhouse-server.err.log"]

    def ping(self) -> bool:
        return ping_clickhouse(HOST, self.http_port)

    def after_ready(self) -> None:
        clickhouse_query(
            HOST,
            self.http_port,
            f"CREATE DATABASE IF NOT EXISTS {self.database}",
            password=self.password(self.ADMIN),
        )

    def address(self) -> str:
        return f"http://{HOST}:{self.http_port} (native {self.tcp_port})"

    def env(self) -> dict[str, str]:
        return {
            "CLICKHOUSE_HOST": HOST,
            "CLICKHOUSE_PORT": str(self.http_port),
            "CLICKHOUSE_DATABASE": self.database,
            # The administrator's, for tools run against the stack (`make reconcile`); a
            # service gets its own user's instead, or none (Stack.service).
            **self.user_env(self.ADMIN),
        }


class MongoServer(ManagedServer):
    """nx-27017, the MongoDB wire-protocol stand-in, from this Python environment."""

    def __init__(
        self, state_dir: Path, registry: PidRegistry | None, port: int | None = None
    ) -> None:
        super().__init__("mongo", state_dir, registry)
        self.port = pick_port(port)

    @property
    def uri(self) -> str:
        return f"mongodb://{HOST}:{self.port}"

    def prepare(self) -> None:
        (self.dir / "data").mkdir(parents=True, exist_ok=True)
        # A pid file left by a killed run must not stop nx-27017 from starting.
        (self.dir / "nx-27017.pid").unlink(missing_ok=True)

    def argv(self) -> list[str]:
        binary = Path(sys.executable).parent / "nx-27017"
        return [
            str(binary) if binary.exists() else _which("nx-27017"),
            "--data-dir", str(self.dir / "data"),
            "--host", HOST,
            "-p", str(self.port),
            "--log-file", str(self.dir / "nx-27017.log"),
            "--pid-file", str(self.dir / "nx-27017.pid"),
        ]  # fmt: skip

    def server_logs(self) -> list[Path]:
        return [self.dir / "nx-27017.log"]

    def ping(self) -> bool:
        return ping_mongo(self.uri)

    def address(self) -> str:
        return self.uri

    def env(self) -> dict[str, str]:
        return {"MONGODB_URI": self.uri}


def _which(program: str) -> str:
    path = shutil.which(program) or shutil.which(program, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if path is None:
        raise FileNotFoundError(f"{program} not found on PATH (is its package installed?)")
    return path


class RedisClusterNode(RedisServer):
    """One master of a local Redis Cluster (cluster mode on, its own nodes.conf)."""

    def __init__(self, state_dir: Path, registry: PidRegistry | None, index: int) -> None:
        super().__init__(state_dir, registry)
        self.name = f"redis-cluster-{index}"
        self.dir = state_dir / self.name
        # The cluster bus defaults to port + 10000, which a free port above 55535 cannot have.
        self.bus_port = pick_port(None)

    def argv(self) -> list[str]:
        return [
            *super().argv(),
            "--cluster-enabled", "yes",
            "--cluster-config-file", str(self.dir / "nodes.conf"),
            "--cluster-node-timeout", "5000",
            "--cluster-port", str(self.bus_port),
        ]  # fmt: skip


class RedisCluster:
    """Three masters on free ports, slots split between them by `redis-cli --cluster create`.

    Not part of the stack: a test that needs it asks for the `redis_cluster` fixture, and only
    then is it started. `env()` points a service at it (REDIS_CLUSTER=true, one seed node).
    """

    ready_timeout = 30.0

    def __init__(self, state_dir: Path, registry: PidRegistry | None, masters: int = 3) -> None:
        self.nodes = [RedisClusterNode(state_dir, registry, i) for i in range(masters)]

    @property
    def host(self) -> str:
        return HOST

    @property
    def port(self) -> int:
        return self.nodes[0].port

    def start(self) -> None:
        for node in self.nodes:
            node.launch()
        try:
            for node in self.nodes:
                node.wait_ready()
            create = [
                _which("redis-cli"), "--cluster", "create",
                *(f"{HOST}:{node.port}" for node in self.nodes),
                "--cluster-replicas", "0", "--cluster-yes",
            ]  # fmt: skip
            subprocess.run(create, check=True, capture_output=True, timeout=60)
            self._wait_ok()
        except BaseException:
            self.stop()
            raise

    def _wait_ok(self) -> None:
        """Until every node says cluster_state:ok (slots assigned and known everywhere)."""
        deadline = time.monotonic() + self.ready_timeout
        while True:
            states = [cluster_state(HOST, node.port) for node in self.nodes]
            if all(state == "ok" for state in states):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"Redis Cluster not ready: {states}")
            time.sleep(0.1)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def env(self) -> dict[str, str]:
        # A test's own cluster has no users: said explicitly rather than left to the default.
        return {
            "REDIS_HOST": HOST,
            "REDIS_PORT": str(self.port),
            "REDIS_CLUSTER": "true",
            "REDIS_PASSWORD": "",
        }

    def address(self) -> str:
        return ",".join(node.address() for node in self.nodes)


def redis_version(binary: str) -> tuple[int, int]:
    """(major, minor) of a redis-server binary, from its --version line."""
    line = subprocess.run(
        [binary, "--version"], capture_output=True, text=True, check=True, timeout=10
    ).stdout
    found = re.search(r"v=(\d+)\.(\d+)", line)
    if found is None:
        raise RuntimeError(f"cannot read the version of {binary}: {line!r}")
    return int(found[1]), int(found[2])
