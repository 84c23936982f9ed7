"""Run the stack and some services in the foreground until SIGINT/SIGTERM, then stop it all."""

from __future__ import annotations

import os
import re
import shlex
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from devstack.pki import BUNDLE_NAME, CERT_NAME, KEY_NAME, TRUST_FOLDER
from devstack.processes import ChildProcess
from devstack.service import ServiceProcess
from devstack.stack import Stack
from promo_libs.config import redacted_uri

_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


_SECRET = re.compile(r"PASSWORD|SECRET|TOKEN")


def screen_line(key: str, value: str) -> str:
    """The `export` line `make run` prints for one variable of the stack: a secret stays in
    stack.env (0600; `python -m devstack env` prints it for `eval`), off the screen and out of
    any log of this output; a URI without its password (a MongoDB from the environment)."""
    if value and _SECRET.search(key):
        return f"export {key}='<in stack.env>'"
    shown = redacted_uri(value) if key.endswith("_URI") else value
    return f"export {key}={shlex.quote(shown)}"


class Supervisor:
    """Servers first, then `services` in order; on shutdown services first (reversed), then servers.

    A child that dies while up is reported with its log tail; with `stop_on_failure` the whole
    stack then shuts down and `run_forever()` returns 1. Must run in the main thread.
    """

    def __init__(
        self,
        stack: Stack,
        services: Sequence[ServiceProcess] = (),
        *,
        stop_on_failure: bool = False,
        poll_interval: float = 0.5,
    ) -> None:
        self.stack = stack
        self.services = list(services)
        self.stop_on_failure = stop_on_failure
        self.poll_interval = poll_interval
        self._stop = threading.Event()
        self._starting = False
        self._reported: set[int] = set()

    def request_stop(self) -> None:
        self._stop.set()

    def run_forever(self) -> int:
        previous = {sig: signal.signal(sig, self._on_signal) for sig in _SIGNALS}
        status = 0
        try:
            self._starting = True
            self._start_all()
            self._starting = False
            print(f"devstack: up; env written to {self.stack.state_dir / 'stack.env'}")
            for key, value in self.stack.env.items():
                print(screen_line(key, value))
            self._print_examples()
            print("devstack: Ctrl-C (SIGINT) or SIGTERM stops everything", flush=True)
            while not self._stop.wait(self.poll_interval):
                if self._report_deaths() and self.stop_on_failure:
                    status = 1
                    break
        except KeyboardInterrupt:
            print("devstack: interrupted during start-up", flush=True)
            status = 130
        finally:
            self._starting = False
            self._stop_all()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return status

    def _print_examples(self) -> None:
        """grpcurl lines that work as printed (grpcurl lives next to this Python): every port
        is mutual TLS, so each line presents a certificate of the stack's development CA."""
        grpcurl = Path(sys.executable).parent / "grpcurl"
        shown = os.path.relpath(grpcurl) if grpcurl.exists() else "grpcurl"
        pki = self.stack.pki

        def shown_path(path: Path) -> str:
            return os.path.relpath(path) if path.is_relative_to(Path.cwd()) else str(path)

        folder = shown_path(pki.folder)
        print(
            f"devstack: certificates in {folder}: the trust bundle {TRUST_FOLDER}/{BUNDLE_NAME}, "
            f"and <identity>/{CERT_NAME} and {KEY_NAME} for back-office, storefront and "
            "operator (reflection is the operator's)",
            flush=True,
        )

        def as_(identity: str) -> str:
            files = pki.files(identity)
            return (
                f"{shown} -cacert {shown_path(files.ca)} -cert {shown_path(files.cert)} "
                f"-key {shown_path(files.key)}"
            )

        for service in self.services:
            print(f"devstack: {service.name} at {service.address}; try:", flush=True)
            print(f"  {as_('operator')} {service.address} list", flush=True)
            print(
                f'  {as_("operator")} -d \'{{"service":""}}\' {service.address} '
                "grpc.health.v1.Health/Check",
                flush=True,
            )

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        print(f"devstack: got {signal.Signals(signum).name}, stopping", flush=True)
        self._stop.set()
        if self._starting:
            self._starting = False
            raise KeyboardInterrupt

    def _start_all(self) -> None:
        self.stack.start()
        for service in self.services:
            if service.registry is None:
                service.registry = self.stack.registry
            print(f"devstack: starting service {service.name} on {service.address}", flush=True)
            service.start_and_wait()
            print(f"devstack: {service.name} is SERVING (log {service.log_path})", flush=True)

    def _stop_all(self) -> None:
        for service in reversed(self.services):
            if service.running:
                print(f"devstack: stopping service {service.name}", flush=True)
            service.terminate()
        self.stack.stop()

    def _children(self) -> list[ChildProcess]:
        children = [s.child for s in self.stack.managed()]
        children += [s.child for s in self.services]
        return [c for c in children if c is not None]

    def _report_deaths(self) -> bool:
        found = False
        for child in self._children():
            if child.died_unexpectedly and id(child) not in self._reported:
                self._reported.add(id(child))
                found = True
                print(
                    f"devstack: {child.name} died unexpectedly (exit code {child.exit_code})\n"
                    f"{child.log_tail()}",
                    file=sys.stderr,
                    flush=True,
                )
        return found
