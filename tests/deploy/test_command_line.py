"""One command line for every operator command: `python -m <service> <command>`.

Each service's operator commands are subcommands of its one entrypoint (promo_libs.entrypoint),
so manifests, the Makefile and runbooks name a service and a command, never a module. Only the
developer tools that are not operator commands of a service keep modules of their own.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

COMMANDS = {
    "users_service": {"serve", "migrate", "replay"},
    "promocodes_service": {"serve", "migrate", "sweep", "replay"},
    "orders_service": {"serve", "migrate", "sweep", "replay"},
    "analytics_service": {"serve"},
    "sync_consumer": {"serve", "migrate", "replay-dead-letters", "rebuild"},
}
# Runnable modules besides the entrypoints: developer and cross-database tools.
OTHER_MODULES = {"sync_consumer/asyncapi.py"}


@pytest.mark.parametrize("module", sorted(COMMANDS))
def test_each_service_offers_its_commands_as_subcommands(module: str) -> None:
    usage = subprocess.run(
        [sys.executable, "-m", module, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert usage.returncode == 0, usage.stderr
    offered = set(re.findall(r"\{([^}]*)\}", usage.stdout)[0].split(","))
    assert offered == COMMANDS[module]


def test_no_other_module_is_a_command() -> None:
    runnable = {
        path.relative_to(src).as_posix()
        for src in ROOT.glob("services/*/src")
        for path in src.glob("*/**/*.py")
        if path.name != "__main__.py" and '__name__ == "__main__"' in path.read_text()
    }
    assert runnable == OTHER_MODULES
