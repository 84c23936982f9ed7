"""What an operator does with grpcurl against a running service: no .proto files at hand.

Every port is mutual TLS; the operator identity may use reflection (and health), so `list`,
`describe` and health work with its certificate alone. Calls to the API are made as the
workload allowed to make them, which has the .proto files, not reflection.
"""

import json
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from devstack.service import ServiceProcess
from devstack.stack import Stack

GRPCURL = shutil.which("grpcurl", path=str(Path(sys.executable).parent)) or "grpcurl"


ROOT = Path(__file__).resolve().parents[2]
PROTOS = ["-import-path", str(ROOT / "protos"), "-proto", "promo/v1/users.proto"]


def tls(service: ServiceProcess, identity: str) -> list[str]:
    files = service.tls(identity)
    return ["-cacert", str(files.ca), "-cert", str(files.cert), "-key", str(files.key)]


def grpcurl(
    address: str,
    *args: str,
    data: dict[str, Any] | None = None,
    flags: list[str] | None = None,
    expect_ok: bool = True,
) -> str:
    argv = [GRPCURL, *(flags or []), "-max-time", "10"]
    if data is not None:
        argv += ["-d", json.dumps(data)]
    result = subprocess.run(
        [*argv, address, *args], capture_output=True, text=True, timeout=30, check=False
    )
    if expect_ok:
        assert result.returncode == 0, f"grpcurl {args} failed: {result.stderr}"
        return result.stdout
    assert result.returncode != 0, f"grpcurl {args} succeeded: {result.stdout}"
    return result.stderr


def health(users: ServiceProcess, service: str) -> str:
    answer = json.loads(
        grpcurl(
            users.address,
            "grpc.health.v1.Health/Check",
            data={"service": service},
            flags=tls(users, "operator"),
        )
    )
    return str(answer["status"])


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


@pytest.fixture
def users(start_service: Callable[..., ServiceProcess], mongo_db_name: str) -> ServiceProcess:
    return start_service(
        "users",
        [sys.executable, "-m", "users_service"],
        extra_env={
            "MONGODB_DB_NAME": mongo_db_name,
            "HEALTH_CHECK_INTERVAL_SECONDS": "0.2",
            "ARGON2_MEMORY_KIB": "8192",
        },
    )


def test_reflection_lists_and_describes_the_service(users: ServiceProcess) -> None:
    operator = tls(users, "operator")
    services = grpcurl(users.address, "list", flags=operator).split()
    assert {"promo.v1.UserService", "grpc.health.v1.Health"} <= set(services)
    methods = grpcurl(users.address, "list", "promo.v1.UserService", flags=operator).split()
    assert {f"promo.v1.UserService.{m}" for m in ("CreateUser", "GetUser", "ListUsers")} <= set(
        methods
    )
    description = grpcurl(
        users.address, "describe", "promo.v1.UserService.CreateUser", flags=operator
    )
    assert (
        "rpc CreateUser ( .promo.v1.CreateUserRequest ) returns ( .promo.v1.User )" in description
    )


def test_reflection_is_the_operators_and_plaintext_is_refused(users: ServiceProcess) -> None:
    denied = grpcurl(users.address, "list", flags=tls(users, "back-office"), expect_ok=False)
    assert "PermissionDenied" in denied, denied
    # Plaintext on the mutual-TLS port: grpcurl never gets a connection (how it words that
    # depends on where the handshake broke off: a dial timeout or an unavailable server).
    refused = grpcurl(users.address, "list", flags=["-plaintext"], expect_ok=False)
    assert any(sign in refused for sign in ("Failed to dial", "Unavailable")), refused


def test_a_call_returns_json(users: ServiceProcess) -> None:
    staff = [*tls(users, "back-office"), *PROTOS]
    email = f"ops.{uuid.uuid4().hex[:8]}@example.com"
    created = json.loads(
        grpcurl(
            users.address,
            "promo.v1.UserService/CreateUser",
            data={"user": {"email": email, "displayName": "Ops"}, "password": "correct horse 1"},
            flags=staff,
        )
    )
    assert created["email"] == email and created["active"] is True and "password" not in created
    fetched = json.loads(
        grpcurl(
            users.address,
            "promo.v1.UserService/GetUser",
            data={"id": created["id"]},
            flags=staff,
        )
    )
    assert fetched["id"] == created["id"]


def test_health_follows_mongo_down_and_back(users: ServiceProcess, stack: Stack) -> None:
    assert health(users, "") == "SERVING"
    assert health(users, "mongo") == "SERVING"
    assert health(users, "promo.v1.UserService") == "SERVING"
    assert health(users, "liveness") == "SERVING"
    with stack.server_down("mongo"):
        wait_for(lambda: health(users, "mongo") == "NOT_SERVING", 20, "mongo NOT_SERVING")
        assert health(users, "") == "NOT_SERVING"
        # Not a reason to restart the process: a new one would not bring MongoDB back.
        assert health(users, "liveness") == "SERVING"
    wait_for(lambda: health(users, "mongo") == "SERVING", 30, "mongo SERVING again")
    assert health(users, "") == "SERVING"


def test_sigterm_drains_and_exits_cleanly(users: ServiceProcess) -> None:
    started = time.monotonic()
    exit_code = users.terminate()  # SIGTERM; SIGKILL only if it overstays the grace period
    assert exit_code == 0
    assert time.monotonic() - started < 15
    assert '"shutting down"' in users.log_tail(50) and '"stopped"' in users.log_tail(50)
