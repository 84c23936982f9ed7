"""The state folder: an exclusive lock and a record of the processes started from it.

A run that was killed (SIGKILL, crash) leaves its record behind; the next run kills the processes
it names, after checking that each pid still runs the recorded command.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import IO

_REPO_ROOT = Path(__file__).resolve().parents[2]


def default_state_dir() -> Path:
    """`<repo>/.state/dev`, the state folder of `python -m devstack up`."""
    return _REPO_ROOT / ".state" / "dev"


class StateLockedError(RuntimeError):
    """Another live devstack owns the state folder."""


class StateLock:
    """An exclusive flock on `<state>/devstack.lock`, released by the kernel if the owner dies."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "devstack.lock"
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        if self._file is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "?"
            handle.close()
            raise StateLockedError(
                f"state folder {self.path.parent} is in use by another devstack (pid {owner})"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._file = handle

    def release(self) -> None:
        if self._file is None:
            return
        fcntl.flock(self._file, fcntl.LOCK_UN)
        self._file.close()
        self._file = None


class PidRegistry:
    """`<state>/pids.json`: name -> pid and command of each live child started from this folder."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "pids.json"
        self._lock = threading.Lock()

    def add(self, name: str, pid: int, command: str) -> None:
        with self._lock:
            entries = self._read()
            entries[name] = {"pid": pid, "command": command}
            self._write(entries)

    def remove(self, name: str) -> None:
        with self._lock:
            entries = self._read()
            if entries.pop(name, None) is not None:
                self._write(entries)

    def kill_stale(self, timeout: float = 10.0) -> list[str]:
        """Stop every recorded process that still runs its command; returns what was stopped."""
        with self._lock:
            entries = self._read()
            stopped = [
                f"{name} (pid {entry['pid']})"
                for name, entry in entries.items()
                if _stop_if_same(int(entry["pid"]), str(entry["command"]), timeout)
            ]
            self._write({})
        return stopped

    def _read(self) -> dict[str, dict[str, int | str]]:
        try:
            data = json.loads(self.path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}
        return data if isinstance(data, dict) else {}

    def _write(self, entries: dict[str, dict[str, int | str]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(entries, indent=2))
        tmp.replace(self.path)


def _stop_if_same(pid: int, command: str, timeout: float) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return False
    if command not in cmdline:
        return False
    _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        time.sleep(0.1)
    _signal_group(pid, signal.SIGKILL)
    return True


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
