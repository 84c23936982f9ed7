"""One of the project's own gRPC services run as a child process."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import grpc

from devstack.pki import DevPki
from devstack.probes import grpc_health_status
from devstack.processes import ChildProcess, StartupError
from devstack.state import PidRegistry, default_state_dir
from promo_libs.config import TlsPaths
from promo_libs.grpc.client import secure_sync_channel

HOST = "127.0.0.1"
# Who a test or benchmark calls as when it names nobody: staff, who may manage the catalogue,
# users and analytics. Calls the policies keep for one workload name it, e.g.
# `service.channel(identity="orders")` for RedeemPromoCode / ReleasePromoCode.
DEFAULT_CALLER = "back-office"
# Who devstack's own health probes present (health is open to every workload).
PROBE_IDENTITY = "operator"


class ServiceProcess:
    """A gRPC service: started with `env`, healthy when grpc.health.v1 Check("") is SERVING.

    Output goes to `<log_dir>/<name>.log` (default `<repo>/.state/dev/services`). Every channel
    to it is mutual TLS with a certificate of `pki` (default `<repo>/.state/dev/pki`), the
    caller's identity chosen per channel.
    `python_module(...)` builds one that runs `python -m <module>` from this environment.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str],
        grpc_port: int,
        *,
        log_dir: Path | None = None,
        ready_timeout: float = 30.0,
        stop_timeout: float = 15.0,
        registry: PidRegistry | None = None,
        pki: DevPki | None = None,
        before_start: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        # Work that needs the servers up (sync-consumer's ClickHouse migrations), for a service
        # made before the stack started (`devstack run` parses its --service list first): done
        # by the first start().
        self._before_start = before_start
        self.argv = list(argv)
        self.env = dict(env)
        self.grpc_port = grpc_port
        self.log_path = (log_dir or default_state_dir() / "services") / f"{name}.log"
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self.registry = registry
        self.pki = pki or DevPki(default_state_dir() / "pki")
        self._child: ChildProcess | None = None

    @classmethod
    def python_module(
        cls,
        name: str,
        module: str,
        env: Mapping[str, str],
        grpc_port: int,
        *,
        args: Sequence[str] = (),
        log_dir: Path | None = None,
    ) -> ServiceProcess:
        return cls(name, [sys.executable, "-m", module, *args], env, grpc_port, log_dir=log_dir)

    @property
    def address(self) -> str:
        return f"{HOST}:{self.grpc_port}"

    def tls(self, identity: str = DEFAULT_CALLER) -> TlsPaths:
        """The certificate files of `identity` (issued by the stack's CA on first use)."""
        return self.pki.files(identity)

    def channel(
        self, identity: str = DEFAULT_CALLER, *, user_token: str | None = None
    ) -> grpc.aio.Channel:
        """An asyncio channel to this service, calling as workload `identity`.

        Every test opens its channels here, so that how callers reach a service (mutual TLS,
        which certificate) is decided in one place. `identity` is a promo_libs.identity.Workload
        value: "back-office" (default), "storefront", "orders", "operator", ... The storefront
        acts for one signed-in user: give it that user's `user_token` (AuthenticateUser's).
        """
        return self.pki.channel(self.address, identity, user_token=user_token)

    def sync_channel(self, identity: str = DEFAULT_CALLER) -> grpc.Channel:
        """A blocking channel to this service (for tests that run no event loop)."""
        return secure_sync_channel(self.address, self.tls(identity))

    @property
    def child(self) -> ChildProcess | None:
        return self._child

    @property
    def running(self) -> bool:
        return self._child is not None and self._child.running

    def start(self) -> None:
        if self._before_start is not None:
            self._before_start()
            self._before_start = None
        self._child = ChildProcess(
            self.name,
            self.argv,
            log_path=self.log_path,
            env=self.env,
            registry=self.registry,
        )
        self._child.start()

    def health(self, timeout: float = 1.0, service: str = "") -> str:
        """`SERVING`, `NOT_SERVING`, ... or `UNREACHABLE` (overall, or of one `service`)."""
        return grpc_health_status(
            self.address, self.tls(PROBE_IDENTITY), service=service, timeout=timeout
        )

    def wait_status(self, expected: str, timeout: float = 15.0) -> None:
        """Wait until the health check reports `expected` (e.g. `NOT_SERVING`)."""
        deadline = time.monotonic() + timeout
        status = self.health()
        while status != expected:
            if time.monotonic() > deadline:
                tail = self._child.log_tail() if self._child else ""
                raise TimeoutError(
                    f"{self.name} reports {status}, not {expected}, after {timeout:.0f}s\n{tail}"
                )
            time.sleep(0.1)
            status = self.health()

    def wait_healthy(self, timeout: float | None = None) -> None:
        if self._child is None:
            raise StartupError(f"{self.name} was never started")
        self._child.wait_ready(
            lambda: self.health(timeout=0.5) == "SERVING",
            self.ready_timeout if timeout is None else timeout,
            f"report SERVING on {self.address}",
        )

    def start_and_wait(self) -> None:
        self.start()
        try:
            self.wait_healthy()
        except BaseException:
            self.kill()
            raise

    def terminate(self) -> int | None:
        """SIGTERM (graceful shutdown), SIGKILL after `stop_timeout`. Returns the exit code."""
        return self._child.stop(self.stop_timeout) if self._child else None

    def kill(self) -> int | None:
        """SIGKILL: a crash, as far as the service can tell."""
        return self._child.kill() if self._child else None

    def restart(self) -> None:
        """Terminate, start again on the same port, wait until SERVING."""
        self.terminate()
        self.start_and_wait()

    def log_tail(self, lines: int = 40) -> str:
        return self._child.log_tail(lines) if self._child else ""
