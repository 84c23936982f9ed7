"""The Kubernetes manifests: both overlays render, validate against a current Kubernetes'
schemas, and agree with the services they run (entrypoints, variables, ports, probes), with a
restricted security context everywhere and only the design's network flows."""

from __future__ import annotations

import base64
import importlib
import re
import subprocess
import sys
from typing import Any
from urllib.parse import urlsplit
from xml.etree import ElementTree

import pytest

from promo_libs.grpc.health import LIVENESS, READINESS
from tests.deploy.deploy_support import (
    BY_MODULE,
    CLICKHOUSE_USER_FILES,
    CLICKHOUSE_USERS,
    K8S,
    KUBERNETES_VERSION,
    OVERLAYS,
    READER_XML,
    SERVICES,
    Service,
    by_kind,
    container_env,
    containers,
    is_project_image,
    is_secret,
    render,
    settings_class,
    variables_to_set,
    workloads,
    yaml_module,
)

GRPC_SERVICES = [s for s in SERVICES if s.name != "sync-consumer"]


def service_container(overlay: str, service: Service) -> tuple[dict[str, Any], dict[str, Any]]:
    found = workloads(render(overlay))
    assert service.name in found, f"{overlay}: no workload named {service.name}"
    pod = found[service.name]["pod"]
    (container,) = [c for c in pod["containers"] if c["name"] == service.name]
    return found[service.name], container


# --- rendering and schemas ---------------------------------------------------------------------


@pytest.mark.parametrize("overlay", ["base", *OVERLAYS])
def test_overlay_renders_and_validates_strictly(overlay: str) -> None:
    try:
        import kubernetes_validate
    except ImportError:
        pytest.fail(
            "kubernetes-validate is not installed: add `kubernetes-validate` to the dev "
            "extras and the lock (it bundles the schemas; works offline)",
            pytrace=False,
        )
    objects = render(overlay)
    assert objects, f"{overlay} rendered nothing"
    failures = []
    for obj in objects:
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            failures.append(
                f"{obj['kind']}/{obj['metadata']['name']}: {exc.message} at "
                f"{'/'.join(str(p) for p in exc.path)}"
            )
    assert not failures, "\n".join(failures)


def test_strict_validation_rejects_an_unknown_field() -> None:
    """Guards the guard: a misspelt field must fail, not pass silently."""
    import kubernetes_validate

    deployment = dict(workloads(render("dev"))["users"]["object"])
    deployment["spec"] = {**deployment["spec"], "replica": 3}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_lives_in_the_overlay_namespace(overlay: str) -> None:
    objects = render(overlay)
    (namespace,) = by_kind(objects, "Namespace")
    for obj in objects:
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == namespace, obj["metadata"]["name"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_images_are_tagged_and_name_no_registry(overlay: str) -> None:
    for name, workload in workloads(render(overlay)).items():
        for container in containers(workload["pod"]):
            image = container["image"]
            first, _, rest = image.partition("/")
            assert not (rest and ("." in first or ":" in first)), f"{name}: registry in {image}"
            assert ":" in image.rsplit("/", 1)[-1], f"{name}: {image} has no tag"
            assert not image.endswith(":latest"), f"{name}: {image}"


# --- entrypoints -------------------------------------------------------------------------------


def _commands(overlay: str) -> list[tuple[str, list[str]]]:
    found = []
    for name, workload in workloads(render(overlay)).items():
        for container in containers(workload["pod"]):
            if is_project_image(container["image"]):
                found.append((f"{name}/{container['name']}", container.get("command", [])))
    return found


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_project_containers_run_python_m_a_service_module(overlay: str) -> None:
    for where, command in _commands(overlay):
        assert command[:2] == ["python", "-m"] and len(command) >= 3, f"{where}: {command}"
        assert command[2] in BY_MODULE, f"{where}: {command[2]} is not a service module"


@pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.name)
def test_service_commands_resolve_to_real_entrypoints(service: Service) -> None:
    settings_class(service)  # skips a service not written yet, fails a broken one
    module = importlib.import_module(f"{service.module}.__main__")
    assert callable(getattr(module, "main", None)), f"{service.module}.__main__ has no main()"
    uses = [
        where
        for overlay in OVERLAYS
        for where, command in _commands(overlay)
        if command[2] == service.module
    ]
    assert uses, f"no container runs python -m {service.module}"


@pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.name)
def test_subcommands_in_the_manifests_are_handled(service: Service) -> None:
    """`python -m <module> migrate` (the migrations Job): the entrypoint must accept it."""
    settings_class(service)
    wanted = {
        (where, argument)
        for overlay in OVERLAYS
        for where, command in _commands(overlay)
        if command[2] == service.module
        for argument in command[3:]
    }
    if not wanted:
        return
    usage = subprocess.run(
        [sys.executable, "-m", service.module, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert usage.returncode == 0, usage.stderr
    accepted = set(re.findall(r"\{([^}]*)\}", usage.stdout)[0].split(","))
    missing = sorted(
        f"{where}: `python -m {service.module} {arg}`"
        for where, arg in wanted
        if arg not in accepted
    )
    assert not missing, (
        f"python -m {service.module} does not accept these commands (the migrations Job needs "
        "`migrate`: apply this service's migrations, then exit 0):\n" + "\n".join(missing)
    )


# --- configuration -----------------------------------------------------------------------------


def _check_env(
    cls: Any,
    service: Service,
    env: dict[str, tuple[str, str]],
    where: str,
    must_set: dict[str, str],
) -> None:
    fields = {name.upper() for name in cls.model_fields}
    missing = [f"{var} ({why})" for var, why in must_set.items() if var not in env]
    assert not missing, f"{where} leaves unset:\n  " + "\n  ".join(missing)
    unknown = set(env) - fields
    assert not unknown, f"{where} sets variables {cls.__name__} does not read: {sorted(unknown)}"
    for var, (source, _) in env.items():
        if is_secret(cls, var):
            assert source == "secret", f"{where}: {var} must come from a Secret, not {source}"


def _load(cls: Any, env: dict[str, tuple[str, str]], monkeypatch: pytest.MonkeyPatch) -> Any:
    for name in cls.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    for var, (_, value) in env.items():
        monkeypatch.setenv(var, value)
    return cls()


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.name)
def test_every_variable_the_service_needs_is_set(
    overlay: str, service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    cls = settings_class(service)
    _, container = service_container(overlay, service)
    env = container_env(container, render(overlay))
    _check_env(cls, service, env, f"{overlay} {service.name}", variables_to_set(cls))
    settings = _load(cls, env, monkeypatch)  # the values pass the class's own validation
    assert settings.grpc_port == service.grpc_port
    assert settings.metrics_port == service.metrics_port


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_migrations_job_containers_get_their_data_store_settings(
    overlay: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    objects = render(overlay)
    job = workloads(objects)["promo-migrations"]
    for container in containers(job["pod"]):
        service = BY_MODULE[container["command"][2]]
        cls = settings_class(service)
        env = container_env(container, objects)
        must_set = {
            var: why
            for var, why in variables_to_set(cls).items()
            if var.startswith(("MONGODB_", "CLICKHOUSE_")) or why.startswith("required")
        }
        _check_env(cls, service, env, f"{overlay} migrations/{container['name']}", must_set)
        _load(cls, env, monkeypatch)


# --- ports and probes --------------------------------------------------------------------------


def test_reflection_is_off_in_prod_only() -> None:
    for overlay, expected in (("prod", "false"), ("dev", None)):
        objects = render(overlay)
        for service in SERVICES:
            _, container = service_container(overlay, service)
            value = container_env(container, objects).get("GRPC_REFLECTION")
            assert (value[1] if value else None) == expected, (overlay, service.name)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_gets_its_certificate(overlay: str) -> None:
    """Every service's container mounts a cert-manager CSI volume with its SPIFFE ID and reads
    its mTLS files from it (promo_libs.config.ServiceSettings.tls_paths)."""
    objects = render(overlay)
    for service in SERVICES:
        workload, container = service_container(overlay, service)
        env = container_env(container, objects)
        mounts = {m["name"]: m for m in container["volumeMounts"]}
        assert mounts["tls"]["readOnly"] is True, service.name
        volume = {v["name"]: v for v in workload["pod"]["volumes"]}["tls"]
        attributes = volume["csi"]["volumeAttributes"]
        assert volume["csi"]["driver"] == "csi.cert-manager.io", service.name
        assert attributes["csi.cert-manager.io/uri-sans"].startswith("spiffe://promo.local/ns/")
        assert attributes["csi.cert-manager.io/uri-sans"].endswith("/sa/${SERVICE_ACCOUNT_NAME}")
        assert service.name in attributes["csi.cert-manager.io/dns-names"].split(",")
        for var, file in (("CERT", "tls.crt"), ("KEY", "tls.key"), ("CA", "ca.crt")):
            assert env[f"GRPC_TLS_{var}_FILE"][1] == f"{mounts['tls']['mountPath']}/{file}"


# Where private keys come from in a pod: the cert-manager CSI driver (one identity's key, issued
# in the pod) and the Secrets that may hold keys; the CA's key lives in the cluster's issuer.
_KEY_ITEM = re.compile(r"(^|[._-])(key|ca\.key|tls\.key)($|\.)|signing-key|private", re.I)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_holds_its_own_identity_only(overlay: str) -> None:
    """Every container of every workload (services, Jobs, CronJobs, data stores): a certificate
    volume is the pod's own, issued for the pod's service account (a cert-manager CSI volume,
    whose SPIFFE ID comes from that account and whose DNS names are the workload's), never a
    Secret or a host folder with someone else's key; no volume carries a CA key; the user
    token signing key reaches users alone."""
    objects = render(overlay)
    service_names = {s.name for s in SERVICES}
    for name, workload in workloads(objects).items():
        pod = workload["pod"]
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for volume_name, volume in volumes.items():
            where = f"{overlay} {name}: volume {volume_name}"
            assert "hostPath" not in volume, where
            if "csi" in volume:
                attributes = volume["csi"]["volumeAttributes"]
                assert name in service_names, f"{where}: a certificate for a non-service"
                assert pod["serviceAccountName"] == name, where
                assert attributes["csi.cert-manager.io/uri-sans"] == (
                    "spiffe://promo.local/ns/${POD_NAMESPACE}/sa/${SERVICE_ACCOUNT_NAME}"
                ), where
                assert attributes["csi.cert-manager.io/dns-names"].split(",")[0] == name, where
            for source in ("secret", "configMap"):
                if source not in volume:
                    continue
                items = [i["key"] for i in volume[source].get("items", [])]
                secret_name = str(volume[source].get("secretName", ""))
                # A whole Secret only for the replica set's internal key, mongod's alone.
                assert (
                    items or source == "configMap" or secret_name.startswith("mongodb-keyfile")
                ), f"{where}: a whole Secret mounted, keys not listed"
                for item in items:
                    assert "ca.key" not in item, f"{where}: a CA key"
                    if _KEY_ITEM.search(item) and item != "keyfile":
                        assert (name, item) == ("users", "signing-key.pem"), f"{where}: {item}"
        if name not in service_names:
            assert not any("csi" in v for v in volumes.values()), f"{name} holds a certificate"
        for container in containers(pod):
            for mount in container.get("volumeMounts", []):
                volume = volumes.get(mount["name"], {})  # else a StatefulSet's volume claim
                if "csi" in volume or "secret" in volume:
                    assert mount.get("readOnly") is True, f"{name}/{container['name']}"


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.name)
def test_probes_and_service_point_at_the_listening_ports(overlay: str, service: Service) -> None:
    cls = settings_class(service)
    _, container = service_container(overlay, service)
    env = container_env(container, render(overlay))
    defaults = {name.upper(): f.default for name, f in cls.model_fields.items()}
    grpc_port = int(env["GRPC_PORT"][1]) if "GRPC_PORT" in env else defaults["GRPC_PORT"]
    metrics_port = (
        int(env["METRICS_PORT"][1]) if "METRICS_PORT" in env else defaults["METRICS_PORT"]
    )
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": grpc_port, "metrics": metrics_port}
    # The gRPC port is mutual TLS, which a kubelet probe cannot speak: probes ask the
    # plaintext health-only port.
    health_port = int(env["GRPC_HEALTH_PORT"][1])
    assert health_port not in (0, grpc_port, metrics_port)
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == health_port, f"{probe} of {service.name}"
    # Ready while its own data stores answer; alive as long as the process itself works.
    assert container["startupProbe"]["grpc"]["service"] == READINESS
    assert container["readinessProbe"]["grpc"]["service"] == READINESS
    assert container["livenessProbe"]["grpc"]["service"] == LIVENESS
    svc = by_kind(render(overlay), "Service")[service.name]
    named = {p["name"]: p for p in svc["spec"]["ports"]}
    assert named["grpc"]["targetPort"] == "grpc" and named["grpc"]["appProtocol"] == "grpc"
    assert named["grpc"]["port"] == grpc_port
    assert named["metrics"]["targetPort"] == "metrics"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_service_addresses_name_real_services_and_ports(overlay: str) -> None:
    objects = render(overlay)
    k8s_services = by_kind(objects, "Service")
    for service in SERVICES:
        _, container = service_container(overlay, service)
        for var, (_, value) in container_env(container, objects).items():
            if not var.endswith("_ADDR"):
                continue
            host, port = value.rsplit(":", 1)
            assert host in k8s_services, f"{service.name} {var}={value}: no Service {host}"
            ports = [p["port"] for p in k8s_services[host]["spec"]["ports"] if p["name"] == "grpc"]
            assert ports == [int(port)], f"{service.name} {var}={value}"


# --- security, resources, availability ---------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_runs_restricted(overlay: str) -> None:
    for name, workload in workloads(render(overlay)).items():
        pod = workload["pod"]
        assert pod.get("automountServiceAccountToken") is False, name
        context = pod["securityContext"]
        assert context["runAsNonRoot"] is True, name
        assert context["seccompProfile"]["type"] == "RuntimeDefault", name
        for container in containers(pod):
            where = f"{name}/{container['name']}"
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert "add" not in sc["capabilities"], where
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][kind]), f"{where} {kind}"
            if is_project_image(container["image"]):
                mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
                volumes = {v["name"]: v for v in pod["volumes"]}
                assert "emptyDir" in volumes[mounts["/tmp"]], f"{where}: /tmp is not an emptyDir"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_service_accounts_exist_and_do_not_mount_tokens(overlay: str) -> None:
    objects = render(overlay)
    accounts = by_kind(objects, "ServiceAccount")
    for service in SERVICES:
        workload, _ = service_container(overlay, service)
        account = workload["pod"]["serviceAccountName"]
        assert account in accounts, f"{service.name}: no ServiceAccount {account}"
        assert accounts[account]["automountServiceAccountToken"] is False


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_grpc_services_scale_and_have_disruption_budgets(overlay: str) -> None:
    objects = render(overlay)
    autoscalers = {
        h["spec"]["scaleTargetRef"]["name"]: h
        for h in by_kind(objects, "HorizontalPodAutoscaler").values()
    }
    budgets = list(by_kind(objects, "PodDisruptionBudget").values())
    for service in SERVICES:
        workload, _ = service_container(overlay, service)
        labels = workload["template"]["metadata"]["labels"]
        assert workload["object"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
        covering = [
            b for b in budgets if b["spec"]["selector"]["matchLabels"].items() <= labels.items()
        ]
        assert len(covering) == 1, f"{overlay} {service.name}: {len(covering)} budgets"
        spread = workload["pod"]["topologySpreadConstraints"]
        assert all(c["labelSelector"]["matchLabels"].items() <= labels.items() for c in spread)
        if service.name == "sync-consumer":
            continue
        assert workload["kind"] == "Deployment"
        assert "replicas" not in workload["object"]["spec"], "the HPA owns the replica count"
        hpa = autoscalers[service.name]
        assert hpa["spec"]["scaleTargetRef"]["kind"] == "Deployment"
        assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    if overlay == "prod":
        assert all(autoscalers[s.name]["spec"]["minReplicas"] >= 3 for s in GRPC_SERVICES)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_sync_consumer_is_one_ordered_consumer(overlay: str) -> None:
    workload, container = service_container(overlay, BY_MODULE["sync_consumer"])
    assert workload["kind"] == "StatefulSet"
    assert workload["object"]["spec"]["replicas"] == 1
    autoscaled = {
        h["spec"]["scaleTargetRef"]["name"]
        for h in by_kind(render(overlay), "HorizontalPodAutoscaler").values()
    }
    assert "sync-consumer" not in autoscaled
    (name,) = [e for e in container["env"] if e["name"] == "CONSUMER_NAME"]
    assert name["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_backups_and_migrations_are_present(overlay: str) -> None:
    found = workloads(render(overlay))
    assert found["promo-migrations"]["kind"] == "Job"
    commands = {c["command"][2] for c in containers(found["promo-migrations"]["pod"])}
    assert commands == {"users_service", "promocodes_service", "orders_service", "sync_consumer"}
    assert found["mongodb-backup"]["kind"] == "CronJob"
    assert found["clickhouse-backup"]["kind"] == "CronJob"


def test_prod_uses_external_data_stores_and_dev_runs_its_own() -> None:
    dev_sets = set(by_kind(render("dev"), "StatefulSet"))
    prod_sets = set(by_kind(render("prod"), "StatefulSet"))
    assert {"mongodb", "redis", "clickhouse"} <= dev_sets
    assert prod_sets == {"sync-consumer"}
    prod_config = by_kind(render("prod"), "ConfigMap")
    (datastores,) = [c for n, c in prod_config.items() if n.startswith("promo-datastores")]
    assert "." in datastores["data"]["REDIS_HOST"] and "." in datastores["data"]["CLICKHOUSE_HOST"]


def test_kustomizations_use_only_kustomize_v2_fields() -> None:
    """Debian's kubectl 1.20 (kustomize v2) must render them too."""
    allowed = {
        "apiVersion",
        "kind",
        "namespace",
        "bases",
        "resources",
        "images",
        "commonLabels",
        "configMapGenerator",
        "secretGenerator",
        "patchesStrategicMerge",
        "namePrefix",
    }
    yaml = yaml_module()
    for path in K8S.rglob("kustomization.yaml"):
        fields = set(yaml.safe_load(path.read_text(encoding="utf-8")))
        assert fields <= allowed, f"{path}: {sorted(fields - allowed)}"


# --- network policies --------------------------------------------------------------------------


def _matches(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    if selector is None:
        return False
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions", []):
        key, operator = expression["key"], expression["operator"]
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
        if operator == "In" and labels.get(key) not in expression["values"]:
            return False
        if operator == "NotIn" and labels.get(key) in expression["values"]:
            return False
    return True


def _peer_matches(
    peer: dict[str, Any], pod: dict[str, str], pod_ns: dict[str, str], same_namespace: bool
) -> bool:
    if "ipBlock" in peer:
        return False
    if "namespaceSelector" in peer:
        if not _matches(peer["namespaceSelector"], pod_ns):
            return False
    elif not same_namespace:
        return False
    return "podSelector" not in peer or _matches(peer["podSelector"], pod)


def _port_allowed(rule: dict[str, Any], port: int, names: dict[str, int]) -> bool:
    if "ports" not in rule:
        return True
    return any(names.get(p["port"], p["port"]) == port for p in rule["ports"])


def _allowed(
    policies: list[dict[str, Any]],
    direction: str,
    subject: dict[str, str],
    peer: dict[str, str],
    peer_ns: dict[str, str],
    same_ns: bool,
    port: int,
    port_names: dict[str, int],
) -> bool:
    key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    selecting = [
        p
        for p in policies
        if direction in p["spec"]["policyTypes"] and _matches(p["spec"]["podSelector"], subject)
    ]
    if not selecting:
        return True  # not isolated in this direction
    for policy in selecting:
        for rule in policy["spec"].get(key, []):
            if not _port_allowed(rule, port, port_names):
                continue
            if peers_key not in rule or any(
                _peer_matches(peer_rule, peer, peer_ns, same_ns) for peer_rule in rule[peers_key]
            ):
                return True
    return False


# The design's flows inside the namespace (dev runs the data stores there): caller -> callee.
EXPECTED_FLOWS = {
    ("orders", "users"),
    ("orders", "promocodes"),
    ("promocodes", "users"),
    ("users", "mongodb"),
    ("promocodes", "mongodb"),
    ("orders", "mongodb"),
    ("users", "redis"),
    ("promocodes", "redis"),
    ("orders", "redis"),
    ("sync-consumer", "redis"),
    ("sync-consumer", "clickhouse"),
    ("analytics", "clickhouse"),
}


def test_network_policies_allow_exactly_the_designs_flows() -> None:
    objects = render("dev")
    policies = list(by_kind(objects, "NetworkPolicy").values())
    (namespace,) = by_kind(objects, "Namespace").values()
    ns_labels = {
        **namespace["metadata"].get("labels", {}),
        "kubernetes.io/metadata.name": namespace["metadata"]["name"],
    }
    names = [s.name for s in SERVICES] + ["mongodb", "redis", "clickhouse"]
    found = workloads(objects)
    pods = {n: found[n]["template"]["metadata"]["labels"] for n in names}
    ports = {
        n: {p["name"]: p["containerPort"] for p in found[n]["pod"]["containers"][0]["ports"]}
        for n in names
    }
    allowed = set()
    for src in [s.name for s in SERVICES]:
        for dst in names:
            if src == dst:
                continue
            # the port that serves callers: grpc for services, the store's own port otherwise
            port_name = "grpc" if "grpc" in ports[dst] else next(iter(ports[dst]))
            port = ports[dst][port_name]
            if _allowed(
                policies, "Egress", pods[src], pods[dst], ns_labels, True, port, ports[dst]
            ) and _allowed(
                policies, "Ingress", pods[dst], pods[src], ns_labels, True, port, ports[dst]
            ):
                allowed.add((src, dst))
    unexpected, missing = sorted(allowed - EXPECTED_FLOWS), sorted(EXPECTED_FLOWS - allowed)
    assert allowed == EXPECTED_FLOWS, f"unexpected: {unexpected}, missing: {missing}"
    # Prometheus in the "monitoring" namespace reaches every service's metrics port, and only it.
    monitoring = {"kubernetes.io/metadata.name": "monitoring"}
    for service in SERVICES:
        metrics = ports[service.name]["metrics"]
        assert _allowed(
            policies,
            "Ingress",
            pods[service.name],
            {},
            monitoring,
            False,
            metrics,
            ports[service.name],
        ), service.name
        assert not _allowed(
            policies,
            "Ingress",
            pods[service.name],
            {},
            {"x": "y"},
            False,
            metrics,
            ports[service.name],
        ), service.name


# What a Secret in git may hold (deploy/README.md, "Secrets"): markers that are plainly not
# secrets, or a URI whose password, if it has one, is such a marker.
# (mongod's key file takes the base64 alphabet only: no hyphens.)
PLACEHOLDERS = frozenset({"REPLACE_ME", "example-only-not-a-secret", "exampleOnlyNotASecret"})


def holds_no_real_value(value: str) -> bool:
    if "://" in value:
        password = urlsplit(value).password
        return password is None or password in PLACEHOLDERS
    return value in PLACEHOLDERS


def test_the_placeholder_rule_refuses_real_values() -> None:
    assert holds_no_real_value("mongodb://promo:REPLACE_ME@a:27017,b:27017/?replicaSet=rs0")
    assert holds_no_real_value("mongodb://mongodb-0.mongodb:27017/?replicaSet=rs0")
    for real in ("", "hunter2", "mongodb://promo:hunter2@a:27017/", "REPLACE_ME-but-real"):
        assert not holds_no_real_value(real), real


@pytest.mark.parametrize("overlay", ("base", *OVERLAYS))
def test_no_secret_holds_a_real_value(overlay: str) -> None:
    """Every Secret rendered from git holds placeholders only; real values come from outside
    git. An empty value is refused too: it would be an empty-password default."""
    secrets = by_kind(render(overlay), "Secret")
    assert secrets, f"{overlay}: the services read their credentials from a Secret"
    for name, secret in secrets.items():
        assert not secret.get("stringData"), f"{overlay} {name}: stringData bypasses the check"
        for key, encoded in secret.get("data", {}).items():
            value = base64.b64decode(encoded).decode()
            assert holds_no_real_value(value), f"{overlay} Secret {name} {key} holds a real value"


def test_dev_data_stores_require_the_secrets_passwords() -> None:
    """Authentication on in the dev overlay: Redis and ClickHouse take their passwords from the
    same Secret the services read theirs from."""
    objects = render("dev")
    (redis,) = [c for c in containers(workloads(objects)["redis"]["pod"]) if c["name"] == "redis"]
    env = container_env(redis, objects)
    assert env["REDIS_PASSWORD"][0] == "secret" and env["REDISCLI_AUTH"][0] == "secret"
    command = redis["command"]
    assert command[command.index("--requirepass") + 1] == "$(REDIS_PASSWORD)"
    clickhouse_pod = workloads(objects)["clickhouse"]["pod"]
    (clickhouse,) = [c for c in containers(clickhouse_pod) if c["name"] == "clickhouse"]
    server_env = container_env(clickhouse, objects)
    for role in CLICKHOUSE_USERS:
        assert server_env[f"CLICKHOUSE_{role.upper()}_PASSWORD"][0] == "secret", role


def test_the_clickhouse_reader_is_read_only_and_time_limited() -> None:
    root = ElementTree.parse(READER_XML).getroot()
    (user,) = root.findall("users/promo_reader")
    profile = root.find(f"profiles/{user.findtext('profile')}")
    assert profile is not None
    assert profile.findtext("readonly") == "1"  # no writes, no DDL, no SET to lift limits
    assert 0 < int(profile.findtext("max_execution_time") or 0) <= 60
    assert [d.text for d in user.findall("allow_databases/database")] == ["analytics"]
    password = user.find("password")
    assert password is not None and password.get("from_env") == "CLICKHOUSE_READER_PASSWORD"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_analytics_reads_clickhouse_as_the_reader(overlay: str) -> None:
    objects = render(overlay)
    _, analytics = service_container(overlay, BY_MODULE["analytics_service"])
    env = container_env(analytics, objects)
    assert env["CLICKHOUSE_USER"] == ("configmap", "promo_reader")
    assert env["CLICKHOUSE_PASSWORD"][0] == "secret"
    ref = next(e for e in analytics["env"] if e["name"] == "CLICKHOUSE_PASSWORD")
    assert ref["valueFrom"]["secretKeyRef"]["key"] == "CLICKHOUSE_READER_PASSWORD"
    if overlay == "dev":  # the dev ClickHouse defines the user, with the Secret's password
        (clickhouse,) = containers(workloads(objects)["clickhouse"]["pod"])
        mounts = {m["mountPath"] for m in clickhouse["volumeMounts"]}
        assert "/etc/clickhouse-server/users.d/reader-user.xml" in mounts
        server_env = container_env(clickhouse, objects)
        assert server_env["CLICKHOUSE_READER_PASSWORD"][0] == "secret"


def _clickhouse_login(container: dict[str, Any], objects: tuple[dict[str, Any], ...]) -> str:
    """The ClickHouse user a container logs in as; its password must be that user's key."""
    env = container_env(container, objects)
    source, user = env["CLICKHOUSE_USER"]
    assert source == "configmap", container["name"]
    role = next(r for r, u in CLICKHOUSE_USERS.items() if u == user)
    ref = next(e for e in container["env"] if e["name"] == "CLICKHOUSE_PASSWORD")
    assert ref["valueFrom"]["secretKeyRef"]["key"] == f"CLICKHOUSE_{role.upper()}_PASSWORD"
    return user


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_clickhouse_client_is_its_own_user(overlay: str) -> None:
    """sync-consumer writes as the writer (no DDL), the migrations Job and the backup CronJob
    as the schema's owner, analytics as the reader; every container that logs in is one of them."""
    objects = render(overlay)
    found = workloads(objects)
    logins = {}
    for name, workload in found.items():
        for container in containers(workload["pod"]):
            if "CLICKHOUSE_USER" in {e["name"] for e in container.get("env", [])}:
                logins[f"{name}/{container['name']}"] = _clickhouse_login(container, objects)
    assert logins == {
        "sync-consumer/sync-consumer": "promo_writer",
        "analytics/analytics": "promo_reader",
        "promo-migrations/sync-consumer": "promo_migrator",
        "clickhouse-backup/backup": "promo_migrator",
    }


def test_the_clickhouse_writer_has_no_ddl_and_the_migrator_its_own_password() -> None:
    writer = ElementTree.parse(CLICKHOUSE_USER_FILES["writer"]).getroot()
    (user,) = writer.findall("users/promo_writer")
    profile = writer.find(f"profiles/{user.findtext('profile')}")
    assert profile is not None and profile.findtext("allow_ddl") == "0"
    assert [d.text for d in user.findall("allow_databases/database")] == ["analytics"]
    migrator = ElementTree.parse(CLICKHOUSE_USER_FILES["migrator"]).getroot()
    (owner,) = migrator.findall("users/promo_migrator")
    assert [d.text for d in owner.findall("allow_databases/database")] == ["analytics"]
    for role, root in (("writer", user), ("migrator", owner)):
        password = root.find("password")
        assert password is not None
        assert password.get("from_env") == f"CLICKHOUSE_{role.upper()}_PASSWORD"
    (clickhouse,) = containers(workloads(render("dev"))["clickhouse"]["pod"])
    mounts = {m["mountPath"] for m in clickhouse["volumeMounts"]}
    for role in CLICKHOUSE_USERS:
        assert f"/etc/clickhouse-server/users.d/{role}-user.xml" in mounts


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_clickhouse_backup_talks_tls_where_the_services_do(overlay: str) -> None:
    objects = render(overlay)
    (backup,) = containers(workloads(objects)["clickhouse-backup"]["pod"])
    env = container_env(backup, objects)
    script = backup["command"][-1]
    assert 'if [ "$CLICKHOUSE_SECURE" = true ]; then secure=(--secure); fi' in script
    assert 'clickhouse-client "${secure[@]}"' in script
    secure = env["CLICKHOUSE_SECURE"][1]
    assert secure == ("true" if overlay == "prod" else "false")
    if overlay == "prod":  # the native protocol's TLS port
        assert env["CLICKHOUSE_NATIVE_PORT"][1] == "9440"
    # The backup's egress opens the port it dials.
    (policy,) = [
        p
        for n, p in by_kind(objects, "NetworkPolicy").items()
        if n.endswith("clickhouse-admin-egress")
    ]
    ports = {port["port"] for rule in policy["spec"]["egress"] for port in rule["ports"]}
    assert ports == {int(env["CLICKHOUSE_NATIVE_PORT"][1])}
    (mongodump,) = containers(workloads(objects)["mongodb-backup"]["pod"])
    uri = container_env(mongodump, objects)["MONGODB_URI"][1]
    assert ("tls=true" in uri) == (overlay == "prod")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_redis_client_logs_in_as_its_own_acl_user(overlay: str) -> None:
    """REDIS_USERNAME is the service's name, its password its own Secret key; in dev, the Redis
    defines that user (tests/integration/test_redis_acl.py runs each one's code as it)."""
    objects = render(overlay)
    users = set()
    for service in SERVICES:
        _, container = service_container(overlay, service)
        env = container_env(container, objects)
        if "REDIS_HOST" not in env:
            continue
        assert env["REDIS_USERNAME"] == ("configmap", service.name)
        ref = next(e for e in container["env"] if e["name"] == "REDIS_PASSWORD")
        key = f"REDIS_{service.name.upper().replace('-', '_')}_PASSWORD"
        assert ref["valueFrom"]["secretKeyRef"]["key"] == key, service.name
        users.add(service.name)
    assert users == {"users", "promocodes", "orders", "sync-consumer"}
    if overlay == "dev":
        (redis,) = containers(workloads(objects)["redis"]["pod"])
        command = redis["command"]
        defined = {command[n + 1].split()[0] for n, a in enumerate(command) if a == "--user"}
        assert defined == users


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_user_token_keys_come_from_a_secret_mounted_where_configured(overlay: str) -> None:
    """Every service that verifies user tokens reads USER_TOKEN_JWKS_FILE from the mounted
    promo-user-tokens Secret; users alone gets the signing key, readable by the pod's group
    only. The Secret itself is made outside git (a real key), so none is rendered."""
    objects = render(overlay)
    assert "promo-user-tokens" not in by_kind(objects, "Secret")
    for service in SERVICES:
        if service.module == "sync_consumer":  # health only: no call on a user's behalf
            continue
        workload, container = service_container(overlay, service)
        env = container_env(container, objects)
        (volume,) = [v for v in workload["pod"]["volumes"] if v["name"] == "user-tokens"]
        assert volume["secret"]["secretName"] == "promo-user-tokens"
        items = {item["key"]: item for item in volume["secret"]["items"]}
        (mount,) = [m for m in container["volumeMounts"] if m["name"] == "user-tokens"]
        assert mount["readOnly"] is True
        assert (
            env["USER_TOKEN_JWKS_FILE"][1] == f"{mount['mountPath']}/{items['jwks.json']['path']}"
        )
        signs = service.name == "users"
        assert ("USER_TOKEN_SIGNING_KEY_FILE" in env) == signs, service.name
        assert ("signing-key.pem" in items) == signs, service.name
        if signs:
            key = items["signing-key.pem"]
            path = f"{mount['mountPath']}/{key['path']}"
            assert env["USER_TOKEN_SIGNING_KEY_FILE"][1] == path
            assert key["mode"] == 0o440 and workload["pod"]["securityContext"]["fsGroup"] == 10001


MONGODB_INIT = K8S / "overlays" / "dev" / "mongodb" / "init-users.js"


def _mongodb_roles() -> dict[str, list[tuple[str, str]]]:
    """init-users.js's table: the Secret key of a user's URI -> its (role, database) pairs."""
    table = re.search(r"const users = \{(.*?)\n\};", MONGODB_INIT.read_text(), re.S)
    assert table is not None, "init-users.js has its `users` table"
    return {
        key: re.findall(r"\{role: '(\w+)', db: '(\w+)'\}", roles)
        for key, roles in re.findall(r"(\w+_MONGODB_URI): \[(.*?)\]", table[1])
    }


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_mongodb_client_is_its_own_user(overlay: str) -> None:
    """Every container that talks to MongoDB reads its own Secret key, whose URI names its own
    user; init-users.js gives each service's user readWrite on that service's database only
    (the one its config names), and mongodump's user the backup role."""
    objects = render(overlay)
    roles = _mongodb_roles()
    keys = {}
    for name, workload in workloads(objects).items():
        for container in containers(workload["pod"]):
            refs = {e["name"]: e for e in container.get("env", [])}
            if "MONGODB_URI" not in refs or name == "mongodb":
                continue
            key = refs["MONGODB_URI"]["valueFrom"]["secretKeyRef"]["key"]
            env = container_env(container, objects)
            user = urlsplit(env["MONGODB_URI"][1]).username
            if container["name"] == "mongodump":
                assert (key, user) == ("BACKUP_MONGODB_URI", "backup")
                assert roles[key] == [("backup", "admin")]
            else:
                service = container["name"]
                assert (key, user) == (f"{service.upper()}_MONGODB_URI", service), name
                database = env["MONGODB_DB_NAME"][1]
                assert roles[key] == [("readWrite", database)], service
            keys.setdefault(key, set()).add(container["name"])
    assert {k: len(v) for k, v in keys.items()} == dict.fromkeys(roles, 1)
    # Each service's database is granted to one user only.
    databases = [db for pairs in roles.values() for _, db in pairs]
    assert len(databases) == len(set(databases))


def test_the_dev_mongodb_runs_with_access_control() -> None:
    objects = render("dev")
    mongodb = workloads(objects)["mongodb"]
    (server,) = mongodb["pod"]["containers"]
    assert "--keyFile=/run/mongodb/keyfile" in server["command"]
    hook = server["lifecycle"]["postStart"]["exec"]["command"]
    assert hook[-1] == "/etc/mongodb-init/init-users.js"
    config_maps = by_kind(objects, "ConfigMap")
    (init,) = [v for v in mongodb["pod"]["volumes"] if v["name"] == "init"]
    script = config_maps[init["configMap"]["name"]]["data"]["init-users.js"]
    assert script == MONGODB_INIT.read_text()
    env = container_env(server, objects)
    for key in [*_mongodb_roles(), "MONGODB_ADMIN_PASSWORD"]:
        assert env[key][0] == "secret", key
    (keyfile,) = [v for v in mongodb["pod"]["volumes"] if v["name"] == "keyfile-secret"]
    assert keyfile["secret"]["defaultMode"] == 0o400
    (copy,) = mongodb["pod"]["initContainers"]
    assert "install -m 0400" in copy["command"][-1]
    assert "mongodb-init-replica-set" not in workloads(objects)  # the hook initialises the set


def test_prod_talks_tls_to_every_data_store() -> None:
    """Every client of a store in prod: MongoDB's URI asks for TLS, Redis and ClickHouse have
    it on (ClickHouse on its HTTPS port, which the egress policy opens); dev stays plaintext
    inside its namespace."""
    for overlay, on in (("prod", True), ("dev", False)):
        objects = render(overlay)
        seen = set()
        for workload in workloads(objects).values():
            for container in containers(workload["pod"]):
                env = {k: v for k, (_, v) in container_env(container, objects).items()}
                if "MONGODB_URI" in env and overlay == "prod":
                    assert "tls=true" in env["MONGODB_URI"], container["name"]
                    seen.add("mongodb")
                if "REDIS_HOST" in env:
                    assert env["REDIS_TLS"] == str(on).lower(), container["name"]
                    seen.add("redis")
                if "CLICKHOUSE_HOST" in env and is_project_image(container["image"]):
                    assert env["CLICKHOUSE_SECURE"] == str(on).lower(), container["name"]
                    seen.add("clickhouse")
        assert seen >= {"redis", "clickhouse"}
    prod = by_kind(render("prod"), "ConfigMap")
    (datastores,) = [c for n, c in prod.items() if n.startswith("promo-datastores")]
    port = int(datastores["data"]["CLICKHOUSE_PORT"])
    egress = by_kind(render("prod"), "NetworkPolicy")["clickhouse-egress"]["spec"]["egress"]
    assert {p["port"] for rule in egress for p in rule["ports"]} == {port}
