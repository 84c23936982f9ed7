"""The README's grpcurl tour, run exactly as written against all five services on their
documented ports, on a stack of its own (a newcomer's fresh machine, not the shared test one)."""

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devstack.ports import free_port
from devstack.service import ServiceProcess
from devstack.stack import Stack

ROOT = Path(__file__).resolve().parents[2]

# name, module, documented port; started in this order (callers after what they call)
SERVICES = [
    ("users", "users_service", 50051),
    ("promocodes", "promocodes_service", 50052),
    ("orders", "orders_service", 50053),
    ("sync-consumer", "sync_consumer", 50055),
    ("analytics", "analytics_service", 50054),
]


def tour_block() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    found = re.search(r"<!-- tour:begin -->\s*```sh\n(.*?)```\s*<!-- tour:end -->", readme, re.S)
    assert found, "README.md has no block between <!-- tour:begin --> and <!-- tour:end -->"
    return found.group(1)


def json_documents(output: str) -> list[dict[str, Any]]:
    """grpcurl prints one pretty JSON object per call; `list` prints plain lines."""
    decoder = json.JSONDecoder()
    documents = []
    for match in re.finditer(r"^\{", output, re.M):
        document, _ = decoder.raw_decode(output[match.start() :])
        documents.append(document)
    return documents


@pytest.fixture(scope="module")
def fresh_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = Stack.from_environ(tmp_path_factory.mktemp("tour"))
    yield stack


@pytest.fixture(scope="module")
def fresh_platform(fresh_stack: Stack) -> Iterator[list[ServiceProcess]]:
    stack = fresh_stack
    stack.start()
    started: list[ServiceProcess] = []
    try:
        for name, module, port in SERVICES:
            service = stack.service(
                name,
                [sys.executable, "-m", module],
                port,
                {
                    "METRICS_PORT": str(free_port()),
                    "HEALTH_CHECK_INTERVAL_SECONDS": "0.2",
                    "ARGON2_MEMORY_KIB": "8192",
                    "ARGON2_TIME_COST": "1",
                    "BATCH_WAIT_MS": "200",
                },
            )
            started.append(service)
            service.start_and_wait()
        yield started
    finally:
        for service in reversed(started):
            service.terminate()
        stack.stop()


def test_the_readme_tour_works_as_printed(
    fresh_stack: Stack, fresh_platform: list[ServiceProcess]
) -> None:
    # The block reads its certificates from $PKI, `make run`'s .state/dev/pki unless set: here
    # the fresh stack's, so a `make run` going on this machine is left alone.
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", tour_block()],
        cwd=ROOT,
        env={**os.environ, "PKI": str(fresh_stack.pki.folder)},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, f"the tour failed:\n{result.stdout}\n{result.stderr}"
    assert "promo.v1.UserService" in result.stdout.splitlines()
    # JSON names are the proto3 JSON mapping's (camelCase): the calls describe the API with
    # the .proto files, whose fields carry their JSON names.
    code, order, cancelled, quote, overview, stats, user = json_documents(result.stdout)
    assert code["code"] == "WELCOME10" and code["maxUses"] == "100"
    assert order["status"] == "ORDER_STATUS_CONFIRMED"
    assert (order["discount"]["amountMinor"], order["total"]["amountMinor"]) == ("500", "4500")
    assert cancelled["status"] == "ORDER_STATUS_CANCELLED"
    assert quote.get("applicable", False) is False and quote["reason"] == "PER_USER_LIMIT_REACHED"
    assert (overview["orders"], overview["confirmedOrders"], overview["cancelledOrders"]) == (
        "2",
        "1",
        "1",
    )
    assert stats["code"] == "WELCOME10" and stats["redemptions"] == "1"
    assert stats["totalDiscount"]["amountMinor"] == "500"
    assert user["orders"] == "2" and user["codes"] == ["WELCOME10"]
    # The last call is refused by the users service's policy, as its comment says.
    assert "Code: PermissionDenied" in result.stderr
    assert "storefront may not call promo.v1.UserService/ListUsers" in result.stderr
