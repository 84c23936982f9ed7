"""The compose file: it parses, runs the same image and commands as the Kubernetes manifests,
sets every variable each service needs, checks health and starts things in order."""

from __future__ import annotations

from typing import Any

import pytest

from tests.deploy.deploy_support import (
    IMAGE,
    SERVICES,
    Service,
    compose,
    compose_value,
    containers,
    is_project_image,
    render,
    settings_class,
    variables_to_set,
    workloads,
)

DATA_STORES = ("mongodb", "redis", "clickhouse")


def compose_env(service: dict[str, Any]) -> dict[str, str]:
    environment = service.get("environment", {})
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) for item in environment)
    return {key: compose_value(value) for key, value in environment.items()}


def test_compose_declares_the_stack() -> None:
    services = compose()["services"]
    assert set(services) >= {*DATA_STORES, "mongodb-init", *(s.name for s in SERVICES)}


@pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.name)
def test_same_image_and_command_as_the_manifests(service: Service) -> None:
    entry = compose()["services"][service.name]
    image = compose_value(entry["image"])
    assert is_project_image(image), image
    (deployment,) = [w for n, w in workloads(render("dev")).items() if n == service.name]
    (container,) = [c for c in containers(deployment["pod"]) if c["name"] == service.name]
    assert entry["command"] == container["command"]
    assert image == container["image"], "compose's default tag is the dev overlay's"
    assert entry["build"]["dockerfile"] == "deploy/docker/Dockerfile"


def test_data_store_images_match_the_dev_overlay() -> None:
    dev_images = {
        c["image"]
        for w in workloads(render("dev")).values()
        for c in containers(w["pod"])
        if not is_project_image(c["image"])
    }
    for name in DATA_STORES:
        assert compose()["services"][name]["image"] in dev_images, name
    assert not any(IMAGE in image for image in dev_images)


@pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.name)
def test_every_variable_the_service_needs_is_set(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    cls = settings_class(service)
    env = compose_env(compose()["services"][service.name])
    # compose's Redis has no password (it is reachable only on the compose network).
    must_set = {v: why for v, why in variables_to_set(cls).items() if v != "REDIS_PASSWORD"}
    missing = [f"{var} ({why})" for var, why in must_set.items() if var not in env]
    assert not missing, f"compose {service.name} leaves unset:\n  " + "\n  ".join(missing)
    fields = {name.upper() for name in cls.model_fields}
    tolerated = {"REDIS_HOST", "REDIS_PORT"} if service.name == "orders" else set()
    assert set(env) - fields - tolerated == set(), "variables the service does not read"
    for name in cls.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    settings = cls()
    assert (settings.grpc_port, settings.metrics_port) == (service.grpc_port, service.metrics_port)
    published = {int(p.rsplit(":", 1)[1]) for p in compose()["services"][service.name]["ports"]}
    assert published == {service.grpc_port, service.metrics_port}


def test_addresses_name_compose_services() -> None:
    services = compose()["services"]
    for service in SERVICES:
        for var, value in compose_env(services[service.name]).items():
            if var.endswith("_ADDR"):
                host, port = value.rsplit(":", 1)
                assert host in services, f"{service.name} {var}={value}"
                target = compose_env(services[host])
                assert target["GRPC_PORT"] == port, f"{service.name} {var}={value}"
            if var.endswith("_HOST") and var != "GRPC_HOST":
                assert value in services, f"{service.name} {var}={value}"
        uri = compose_env(services[service.name]).get("MONGODB_URI")
        if uri:
            assert "replicaSet=rs0" in uri and "//mongodb:27017" in uri


def test_secrets_have_no_defaults() -> None:
    for name, entry in compose()["services"].items():
        for var, raw in (entry.get("environment") or {}).items():
            if var.endswith("PASSWORD"):
                assert ":?" in str(raw), f"{name} {var} must be required, not defaulted: {raw}"


def test_health_checks_and_start_order() -> None:
    services = compose()["services"]
    for name in [*DATA_STORES, *(s.name for s in SERVICES)]:
        assert services[name]["healthcheck"]["test"], name
    for service in SERVICES:
        health = " ".join(services[service.name]["healthcheck"]["test"])
        # The plaintext health-only port: the gRPC port is mutual TLS.
        assert "HealthStub" in health and "GRPC_HEALTH_PORT" in health
        for dependency, condition in services[service.name]["depends_on"].items():
            expected = (
                "service_completed_successfully"
                if dependency == "mongodb-init"
                else "service_healthy"
            )
            assert condition["condition"] == expected, f"{service.name} -> {dependency}"
    order = {
        "users": {"mongodb-init", "redis"},
        "promocodes": {"mongodb-init", "redis", "users"},
        "orders": {"mongodb-init", "redis", "users", "promocodes"},
        "sync-consumer": {"redis", "clickhouse"},
        "analytics": {"clickhouse", "sync-consumer"},
    }
    for name, needs in order.items():
        assert set(services[name]["depends_on"]) == needs, name
    assert services["mongodb-init"]["depends_on"]["mongodb"]["condition"] == "service_healthy"
    assert "--replSet" in services["mongodb"]["command"]
    assert (
        services["redis"]["command"][services["redis"]["command"].index("--appendonly") + 1]
        == "yes"
    )


def test_service_containers_are_locked_down() -> None:
    for service in SERVICES:
        entry = compose()["services"][service.name]
        assert entry["read_only"] is True
        assert entry["cap_drop"] == ["ALL"]
        assert "no-new-privileges:true" in entry["security_opt"]
        assert entry["user"] == "10001:10001"
        assert any(t.startswith("/tmp") for t in entry["tmpfs"])
        assert all(p.startswith("127.0.0.1:") for p in entry["ports"])
