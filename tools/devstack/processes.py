"""Child processes in their own process group, with a log file and a clean stop."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from devstack.state import PidRegistry


class StartupError(RuntimeError):
    """A child did not come up (exited, or did not answer before its deadline)."""


def _with_death_signal(argv: list[str]) -> list[str]:
    """On Linux, a child started from the main thread gets SIGTERM when its parent dies.

    Done by util-linux's `setpriv --pdeathsig` (part of every Debian system) in front of the
    command, not by a preexec_fn: running Python between fork and exec in a process that has
    threads (gRPC's, asyncio's) can deadlock the child before it ever execs, and without a
    preexec_fn subprocess can use vfork. Only from the main thread: the kernel sends the signal
    when the *thread* that forked exits.
    """
    if not sys.platform.startswith("linux"):
        return argv
    if threading.current_thread() is not threading.main_thread():
        return argv
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return argv
    return [setpriv, "--pdeathsig", "TERM", "--", *argv]


class ChildProcess:
    """One command run as the leader of a new process group, its output appended to `log_path`.

    `extra_logs` are the files the program writes itself; `log_tail()` shows all of them.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        extra_logs: Sequence[Path] = (),
        registry: PidRegistry | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(env) if env is not None else None
        self.log_path = log_path
        self.extra_logs = list(extra_logs)
        self._registry = registry
        self._popen: subprocess.Popen[bytes] | None = None
        self._stopping = False

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen is not None else None

    @property
    def running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    @property
    def exit_code(self) -> int | None:
        return self._popen.poll() if self._popen is not None else None

    @property
    def died_unexpectedly(self) -> bool:
        """Started, then exited without being asked to."""
        return self._popen is not None and not self._stopping and self._popen.poll() is not None

    def start(self) -> None:
        if self.running:
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
            log.write(f"\n=== devstack {stamp} start: {' '.join(self.argv)}\n".encode())
            log.flush()
            self._popen = subprocess.Popen(
                _with_death_signal(self.argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
            )
        self._stopping = False
        if self._registry is not None:
            self._registry.add(self.name, self._popen.pid, Path(self.argv[0]).name)

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM to the group, wait up to `timeout`, then SIGKILL. Returns the exit code."""
        return self._end(signal.SIGTERM, timeout)

    def kill(self) -> int | None:
        """SIGKILL to the group (a crash, as far as the program can tell)."""
        return self._end(signal.SIGKILL, 5.0)

    def _end(self, sig: signal.Signals, timeout: float) -> int | None:
        popen = self._popen
        if popen is None:
            return None
        self._stopping = True
        if popen.poll() is None:
            _signal_group(popen.pid, sig)
            try:
                popen.wait(timeout)
            except subprocess.TimeoutExpired:
                print(f"devstack: {self.name} ignored {sig.name} for {timeout:.0f}s, killing it")
                _signal_group(popen.pid, signal.SIGKILL)
                popen.wait()
            # Anything the leader left behind in its group goes too.
            _signal_group(popen.pid, signal.SIGKILL)
        if self._registry is not None:
            self._registry.remove(self.name)
        return popen.returncode

    def log_tail(self, lines: int = 25) -> str:
        parts = []
        for path in [self.log_path, *self.extra_logs]:
            parts.append(f"--- {path} (last {lines} lines)\n{_tail(path, lines)}")
        return "\n".join(parts)

    def wait_ready(self, probe: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll `probe` until it returns True; fail with the log tail on exit or deadline."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.running:
                raise StartupError(
                    f"{self.name} exited with code {self.exit_code} before {what}\n"
                    f"{self.log_tail()}"
                )
            if probe():
                return
            if time.monotonic() > deadline:
                raise StartupError(
                    f"{self.name} (pid {self.pid}) did not {what} within {timeout:.0f}s\n"
                    f"{self.log_tail()}"
                )
            time.sleep(0.1)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _tail(path: Path, lines: int) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 64 * 1024))
            text = handle.read().decode(errors="replace")
    except OSError as exc:
        return f"(unreadable: {exc})"
    return "\n".join(text.splitlines()[-lines:]) or "(empty)"
