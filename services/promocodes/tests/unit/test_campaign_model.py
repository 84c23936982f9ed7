"""The campaign redemption protocol, model-checked exhaustively with spin (issue 14).

services/promocodes/model/campaign_redemption.pml models two concurrent redemptions of one user,
a release and the sweep, with a crash possible before every write; pan explores every
interleaving, in three configurations of the limits (each makes another limit the binding one).
The protocol must hold, and each deliberately broken variant must be caught: a model that
cannot fail proves nothing. The variants are built and searched two at a time (the machine has
two cores).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

MODEL = Path(__file__).resolve().parents[2] / "model" / "campaign_redemption.pml"
INSTALL = "scripts/bootstrap.sh installs it (Debian package `spin`: apt-get install spin)"
# Far above the depth the searches reach (about 260), so that none is cut short.
DEPTH = 100_000

# Branches of the protocol the search must reach (markers on lines of the model): the campaign
# refusing (its uses or its budget), the code refusing after the campaign reserved, the usage
# refused for want of a free per-user slot, a Redeem meeting the VOIDED tombstone of a Release
# that came first, a Redeem fenced out by the sweep, and the end-state check. A search that
# never gets there would pass without proving anything.
REACHED = (
    "CAMPAIGN_EXHAUSTED / budget",
    "goto code_refused",
    "outcome = SLOT_TAKEN",
    "a Release voided the id",
    "outcome = FENCED",
    "assert(code.uses == ACTIVE_USES",
)
# The broken variants and the assertion each must violate.
BUGS = {
    # the campaign's use given back while the live request writes its usage: granted > counted
    "BUG_UNFENCED_CAMPAIGN": "campaign.uses>=",
    # a campaign use that no usage holds once all is settled: leaked
    "BUG_CAMPAIGN_SETTLED_EARLY": "campaign.uses==",
}


@dataclass(frozen=True)
class Search:
    output: str

    @property
    def errors(self) -> int:
        found = re.search(r"errors: (\d+)", self.output)
        assert found, self.output
        return int(found.group(1))

    @property
    def states(self) -> int:
        found = re.search(r"(\d+) states, stored", self.output)
        assert found, self.output
        return int(found.group(1))

    def reached(self, marker: str) -> bool:
        """Whether the statement on the model's line holding `marker` was executed (pan lists
        every statement it never reached as `<model>:<line>, state ...`)."""
        lines = [n for n, text in enumerate(MODEL.read_text().splitlines(), 1) if marker in text]
        assert len(lines) == 1, f"{marker!r} must mark one line of the model, found {lines}"
        return f"{MODEL.name}:{lines[0]}, state" not in self.output


def tool(name: str, install: str) -> str:
    """The path of a command-line tool, or a failure (not a skip) that says how to install it
    (as tests/deploy/deploy_support.py's tool, which a service's tests cannot import)."""
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"`{name}` is not installed; {install}", pytrace=False)
    return found


@dataclass(frozen=True)
class Tools:
    spin: str
    gcc: str


def _search(tools: Tools, workdir: Path, defines: tuple[str, ...], optimize: str) -> Search:
    workdir.mkdir()
    flags = [f"-D{d}" for d in defines]

    def run(*command: str) -> str:
        # pan exits 0 also when it finds errors: the output says, and the tests read it
        done = subprocess.run(
            command, check=False, cwd=workdir, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, f"{' '.join(command)}:\n{done.stdout}{done.stderr}"
        return done.stdout

    run(tools.spin, *flags, "-a", str(MODEL))  # writes the verifier pan.c into workdir
    run(tools.gcc, optimize, "-DSAFETY", "-o", "pan", "pan.c")
    return Search(run("./pan", f"-m{DEPTH}"))


@pytest.fixture(scope="module")
def searches(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Search]:
    # A missing tool fails (never skips) with how to install it.
    tools = Tools(
        tool("spin", INSTALL),
        tool("gcc", "scripts/bootstrap.sh installs it (Debian package `gcc`)"),
    )
    root = tmp_path_factory.mktemp("spin")
    # The broken variants stop at their first error within a few hundred states: no time
    # optimizing their build. The full searches run faster optimized.
    jobs: dict[str, tuple[tuple[str, ...], str]] = {"protocol": ((), "-O1")}
    jobs |= {bug: ((bug,), "-O0") for bug in BUGS}
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {
            name: pool.submit(_search, tools, root / name, defines, optimize)
            for name, (defines, optimize) in jobs.items()
        }
        return {name: future.result() for name, future in futures.items()}


def test_the_protocol_keeps_every_limit_and_leaves_nothing_pending(
    searches: dict[str, Search],
) -> None:
    search = searches["protocol"]
    assert "Full statespace search" in search.output, search.output
    assert "max search depth too small" not in search.output, search.output
    assert search.errors == 0, search.output
    # exhaustive, and the races happen in it: not a model stuck near its start
    assert search.states > 1_000_000, search.output
    for marker in REACHED:
        assert search.reached(marker), f"never reached {marker!r}\n{search.output}"


@pytest.mark.parametrize("bug", list(BUGS))
def test_the_model_catches_a_broken_protocol(searches: dict[str, Search], bug: str) -> None:
    search = searches[bug]
    assert search.errors >= 1, search.output
    violated = re.search(r"assertion violated (.*)", search.output)
    assert violated and BUGS[bug] in violated.group(1), search.output
