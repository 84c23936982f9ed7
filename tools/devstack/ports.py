"""Free TCP ports on the loopback interface."""

from __future__ import annotations

import socket
import threading

_LOOPBACK = "127.0.0.1"
_handed_out: set[int] = set()
_lock = threading.Lock()


def free_port() -> int:
    """A port nobody listens on now, never the same one twice in this process."""
    with _lock:
        for _ in range(100):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind((_LOOPBACK, 0))
                port: int = sock.getsockname()[1]
            if port not in _handed_out:
                _handed_out.add(port)
                return port
    raise RuntimeError("no free port found on 127.0.0.1")


def port_is_free(port: int) -> bool:
    """True when the port can be bound on the loopback interface right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((_LOOPBACK, port))
        except OSError:
            return False
    return True


def pick_port(preferred: int | None) -> int:
    """`preferred` when it is free (a port remembered from an earlier run), else a new one."""
    if preferred is not None and port_is_free(preferred):
        _handed_out.add(preferred)
        return preferred
    return free_port()
