"""The compose file: it parses, runs the same image and commands as the Kubernetes manifests,
sets every variable each service needs, checks health and starts things in order."""

from __future__ import annotations

import itertools
import os
import re
import stat
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from cryptography import x509

from devstack.pki import DevPki, spiffe_id
from tests.deploy.deploy_support import (
    CLICKHOUSE_USER_FILES,
    CLICKHOUSE_USERS,
    COMPOSE_FILE,
    IMAGE,
    READER_XML,
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
# Run to completion before the services that need them.
ONE_SHOTS = ("mongodb-init", "clickhouse-migrate")


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
    must_set = variables_to_set(cls)
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
            parts = urlsplit(uri)
            assert "replicaSet=rs0" in parts.query and parts.hostname == "mongodb", uri
            # Its own user, its password required from the environment (init-users.js).
            assert parts.username == service.name, uri
            raw = str(services[service.name]["environment"]["MONGODB_URI"])
            secret = f"MONGODB_{service.name.upper()}_PASSWORD"
            assert re.match(rf"^mongodb://{service.name}:\$\{{{secret}:\?[^}}]*\}}@", raw), raw


# A variable or argument that carries a secret, and the only form its value may take in the
# file: the operator's environment, required (compose refuses to start without it).
_SECRET_VARIABLE = re.compile(r"PASSWORD|SECRET|TOKEN|REDISCLI_AUTH")
_REQUIRED = re.compile(r"^\$\{[A-Z_]+:\?[^}]*\}$")


def test_secrets_have_no_defaults() -> None:
    """No password in the compose file: each comes from the operator's environment, required;
    the data stores' own (Redis' --requirepass included) as much as the services'."""
    seen = 0
    for name, entry in compose()["services"].items():
        for var, raw in (entry.get("environment") or {}).items():
            if _SECRET_VARIABLE.search(var) and not var.endswith("_FILE"):
                seen += 1
                assert _REQUIRED.match(str(raw)), f"{name} {var} must be required: {raw}"
        command = entry.get("command") or []
        for flag, value in itertools.pairwise(command):
            if flag == "--requirepass":
                seen += 1
                assert _REQUIRED.match(str(value)), f"{name} {flag} must be required: {value}"
    assert seen, "the data stores run with passwords"


def test_every_data_store_client_authenticates() -> None:
    """Redis and ClickHouse require a password; every service talking to them sends it."""
    services = compose()["services"]
    assert "--requirepass" in services["redis"]["command"]
    for user in ("WRITER", "MIGRATOR", "READER"):
        assert f"CLICKHOUSE_{user}_PASSWORD" in compose_env(services["clickhouse"])
    for service in SERVICES:
        env = compose_env(services[service.name])
        if "REDIS_HOST" in env:
            assert "REDIS_PASSWORD" in env, service.name
        if "CLICKHOUSE_HOST" in env:
            assert "CLICKHOUSE_PASSWORD" in env, service.name


def _mounts(entry: dict[str, Any]) -> dict[str, tuple[str, list[str]]]:
    """target -> (source, options) of a compose service's bind mounts."""
    mounts = {}
    for volume in entry.get("volumes", []):
        source, target, *options = str(volume).split(":")
        mounts[target] = (source, options)
    return mounts


def _pki_folder(source: str) -> str | None:
    """The folder of devstack's PKI layout a mount's source names (None: not the PKI)."""
    prefix = "../../.state/dev/pki"
    if source == prefix or source.startswith(prefix + "/"):
        return source[len(prefix) :].strip("/")
    return None


@pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.name)
def test_every_service_container_gets_its_certificate(service: Service, tmp_path: Path) -> None:
    """Each service reads its own certificate and key from its own identity's folder of what
    devstack issues, and the trust bundle from the bundle's folder, each mounted read-only as a
    folder (so rotation by rename is seen); that certificate names the service as compose
    addresses it, with its SPIFFE ID."""
    entry = compose()["services"][service.name]
    mounts = _mounts(entry)
    pki = DevPki(tmp_path)
    issued = pki.files(service.name)  # the layout devstack writes
    for target, folder in ((_TLS_MOUNT, issued.cert.parent), (_TRUST_MOUNT, issued.ca.parent)):
        source, options = mounts[target]
        assert _pki_folder(source) == folder.relative_to(tmp_path).as_posix(), source
        assert options == ["ro"], source
    env = compose_env(entry)
    assert env["GRPC_TLS_CERT_FILE"] == f"{_TLS_MOUNT}/{issued.cert.name}"
    assert env["GRPC_TLS_KEY_FILE"] == f"{_TLS_MOUNT}/{issued.key.name}"
    assert env["GRPC_TLS_CA_FILE"] == f"{_TRUST_MOUNT}/{issued.ca.name}"
    certificate = x509.load_pem_x509_certificate(issued.cert.read_bytes())
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert service.name in names.get_values_for_type(x509.DNSName)
    assert names.get_values_for_type(x509.UniformResourceIdentifier) == [spiffe_id(service.name)]


def test_no_container_sees_another_identitys_key_or_the_cas(tmp_path: Path) -> None:
    """Every container of the file (services, one-shots, data stores): whatever it mounts of
    the PKI is one folder of the layout, and the only private keys in those folders are its own
    identity's (and, for users alone, the user token signing key). The CA's folder, and so its
    key, is mounted nowhere; the whole PKI folder neither."""
    pki = DevPki(tmp_path)
    for service in SERVICES:
        pki.files(service.name)
    signing_key, jwks = pki.user_token_keys()
    keys = {
        key.relative_to(tmp_path).as_posix(): key for key in pki.secret_files()
    }  # every private key devstack writes, the CA's included
    assert "ca/ca.key" in keys and len(keys) == len(SERVICES) + 2
    own = {s.name: s.name for s in SERVICES}
    for name, entry in compose()["services"].items():
        folders = [
            f for source, _ in _mounts(entry).values() if (f := _pki_folder(source)) is not None
        ]
        assert "" not in folders and "ca" not in folders, f"{name} mounts {folders}"
        visible = {path for path in keys for folder in folders if path.startswith(folder + "/")}
        allowed = set()
        if name in own:
            allowed.add(f"{own[name]}/{pki.files(name).key.name}")
        if name == "users":
            allowed.add(signing_key.relative_to(tmp_path).as_posix())
        assert visible == allowed, f"{name} sees {sorted(visible)}"
        for folder in folders:
            assert (tmp_path / folder).is_dir(), f"{name}: {folder} is no folder devstack writes"
    jwks_folder = jwks.parent.relative_to(tmp_path).as_posix()
    for service in SERVICES:  # the public keys only where a user's token is verified
        folders = {_pki_folder(s) for s, _ in _mounts(compose()["services"][service.name]).values()}
        verifies = "USER_TOKEN_JWKS_FILE" in compose_env(compose()["services"][service.name])
        assert (jwks_folder in folders) == verifies, service.name
        assert verifies == (service.name != "sync-consumer"), service.name


_TLS_MOUNT = "/var/run/promo/tls"
_TRUST_MOUNT = "/var/run/promo/trust"
_HOST_USER = (
    "${PROMO_UID:?export PROMO_UID first: the uid owning .state/dev/pki (id -u)}"
    ":${PROMO_GID:?export PROMO_GID first: its gid (id -g)}"
)


def test_mounted_keys_are_readable_by_the_containers_user_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """devstack writes every key 0600 in 0700 folders, owned by the user running it; compose
    runs each container as the uid and gid the operator exports (PROMO_UID/PROMO_GID, required),
    so with the documented `id -u`/`id -g` the container's user is the keys' owner: it reads
    them, and no other uid can (the image's 10001 could not even enter the folder)."""
    pki = DevPki(tmp_path / "pki")
    _, jwks = pki.user_token_keys()
    for service in SERVICES:
        pki.files(service.name)
    keys = pki.secret_files()
    assert len(keys) == len(SERVICES) + 2  # theirs, the CA's, the token signer's
    assert pki.earlier_layout_files() == []  # nothing loose in the PKI folder itself
    for folder in [tmp_path / "pki", *(key.parent for key in keys), jwks.parent]:
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    for key in keys:
        info = key.stat()
        assert stat.S_IMODE(info.st_mode) == 0o600, key.name
        assert (info.st_uid, info.st_gid) == (os.getuid(), os.getgid()), key.name
    assert stat.S_IMODE(jwks.stat().st_mode) == 0o644  # public
    monkeypatch.setenv("PROMO_UID", str(os.getuid()))
    monkeypatch.setenv("PROMO_GID", str(os.getgid()))
    for service in SERVICES:
        user = str(compose()["services"][service.name]["user"])
        assert _resolve(user) == f"{os.getuid()}:{os.getgid()}", service.name


def _resolve(value: str) -> str:
    """${VAR:?...} as compose resolves it once VAR is exported."""
    return re.sub(r"\$\{([A-Z_]+):\?[^}]*\}", lambda m: os.environ[m[1]], value)


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
                "service_completed_successfully" if dependency in ONE_SHOTS else "service_healthy"
            )
            assert condition["condition"] == expected, f"{service.name} -> {dependency}"
    order = {
        "users": {"mongodb-init", "redis"},
        "promocodes": {"mongodb-init", "redis", "users"},
        "orders": {"mongodb-init", "redis", "users", "promocodes"},
        "sync-consumer": {"redis", "clickhouse-migrate"},
        "analytics": {"clickhouse", "clickhouse-migrate"},
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
        assert entry["user"] == _HOST_USER
        assert any(t.startswith("/tmp") for t in entry["tmpfs"])
        assert all(p.startswith("127.0.0.1:") for p in entry["ports"])


def test_analytics_reads_clickhouse_as_the_reader() -> None:
    services = compose()["services"]
    analytics = services["analytics"]["environment"]
    assert analytics["CLICKHOUSE_USER"] == "promo_reader"
    assert analytics["CLICKHOUSE_PASSWORD"].startswith("${CLICKHOUSE_READER_PASSWORD:?")
    clickhouse = services["clickhouse"]
    mounted = {str(v).split(":")[1]: str(v).split(":")[0] for v in clickhouse["volumes"]}
    source = mounted["/etc/clickhouse-server/users.d/reader-user.xml"]
    assert (COMPOSE_FILE.parent / source).resolve() == READER_XML
    assert "CLICKHOUSE_READER_PASSWORD" in clickhouse["environment"]


def test_each_clickhouse_client_is_its_own_user() -> None:
    """The dev overlay's three users, mounted: sync-consumer writes without DDL, the one-shot
    clickhouse-migrate owns the schema (and runs before the consumer), analytics reads."""
    services = compose()["services"]
    clickhouse = services["clickhouse"]
    mounted = {str(v).split(":")[1]: str(v).split(":")[0] for v in clickhouse["volumes"]}
    for role, user in CLICKHOUSE_USERS.items():
        source = mounted[f"/etc/clickhouse-server/users.d/{role}-user.xml"]
        assert (COMPOSE_FILE.parent / source).resolve() == CLICKHOUSE_USER_FILES[role]
        assert f"CLICKHOUSE_{role.upper()}_PASSWORD" in clickhouse["environment"]
        assert user in CLICKHOUSE_USER_FILES[role].read_text()
    for name, role in (
        ("sync-consumer", "writer"),
        ("clickhouse-migrate", "migrator"),
        ("analytics", "reader"),
    ):
        env = services[name]["environment"]
        assert env["CLICKHOUSE_USER"] == CLICKHOUSE_USERS[role], name
        assert env["CLICKHOUSE_PASSWORD"].startswith(f"${{CLICKHOUSE_{role.upper()}_PASSWORD:?")
    assert services["clickhouse-migrate"]["command"][-1] == "migrate"
    assert services["clickhouse-migrate"]["restart"] == "no"
    # Nothing else logs in: no service shares a ClickHouse password.
    users = [
        compose_env(entry)["CLICKHOUSE_USER"]
        for entry in services.values()
        if "CLICKHOUSE_HOST" in compose_env(entry)
    ]
    assert sorted(users) == sorted(CLICKHOUSE_USERS.values())


def test_redis_runs_the_dev_overlays_acl_users() -> None:
    """The same `--user` rules as the dev overlay (which tests/integration/test_redis_acl.py
    proves against the services' Redis code), each password required from the environment, and
    each service logged in as its own user."""
    services = compose()["services"]
    command = services["redis"]["command"]
    rules = [command[n + 1] for n, arg in enumerate(command) if arg == "--user"]
    (dev_redis,) = containers(workloads(render("dev"))["redis"]["pod"])
    dev = dev_redis["command"]
    dev_rules = [dev[n + 1] for n, arg in enumerate(dev) if arg == "--user"]

    def shape(rule: str) -> str:  # the rule with its password source blanked
        return re.sub(r">(\$\([A-Z_]+\)|\$\{[A-Z_]+:\?[^}]*\})", ">PASSWORD", rule)

    assert [shape(r) for r in rules] == [shape(r) for r in dev_rules]
    for rule in rules:
        name = rule.split()[0]
        env = services[name]["environment"]
        assert env["REDIS_USERNAME"] == name
        var = f"REDIS_{name.upper().replace('-', '_')}_PASSWORD"
        assert str(env["REDIS_PASSWORD"]).startswith("${" + var + ":?"), name
        assert "${" + var + ":?" in rule, name


def test_mongodb_runs_with_access_control_and_a_user_per_service() -> None:
    """The server needs a key file and creates `admin`; the one-shot mongodb-init runs the dev
    overlay's init-users.js with each service's own URI (so user and password agree)."""
    services = compose()["services"]
    server = services["mongodb"]
    assert "--keyFile" in server["command"]
    assert _REQUIRED.match(str(server["environment"]["MONGO_INITDB_ROOT_PASSWORD"]))
    init = services["mongodb-init"]
    mounted = {str(v).split(":")[1]: str(v).split(":")[0] for v in init["volumes"]}
    source = mounted["/etc/mongodb-init/init-users.js"]
    assert (COMPOSE_FILE.parent / source).resolve().name == "init-users.js"
    assert init["command"][-1] == "/etc/mongodb-init/init-users.js"
    for service in SERVICES:
        uri = services[service.name]["environment"].get("MONGODB_URI")
        if uri is not None:
            assert init["environment"][f"{service.name.upper()}_MONGODB_URI"] == uri
