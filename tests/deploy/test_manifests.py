"""Kubernetes manifests: rendered offline, validated against pinned schemas, policies asserted."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from tests.deploy.kustomize import Manifest, containers, load_documents, pod_spec, render

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
TARGETS = {"base": K8S / "base", "production": K8S / "overlays" / "production"}
K8S_VERSION = "1.30.0"
"""The oldest Kubernetes we support; kubernetes-validate (locked) ships its strict schemas."""
CRDS = {"keda.sh/v1alpha1": {"ScaledObject", "TriggerAuthentication"}}
APP_COMPONENTS = {"gateway", "runner", "projector"}


@pytest.fixture(scope="module", params=sorted(TARGETS))
def manifests(request: pytest.FixtureRequest) -> list[Manifest]:
    return render(TARGETS[request.param])


@pytest.fixture(scope="module")
def production() -> list[Manifest]:
    return render(TARGETS["production"])


def find(manifests: list[Manifest], kind: str, name: str) -> Manifest:
    found = [m for m in manifests if m["kind"] == kind and m["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def workloads(manifests: list[Manifest]) -> list[Manifest]:
    return [m for m in manifests if pod_spec(m) is not None]


def config(manifests: list[Manifest]) -> dict[str, str]:
    data: dict[str, str] = find(manifests, "ConfigMap", "tickertape-config")["data"]
    return data


def is_crd(manifest: Manifest) -> bool:
    return manifest["kind"] in CRDS.get(manifest["apiVersion"], set())


def test_every_manifest_validates_strictly(manifests: list[Manifest]) -> None:
    checked = 0
    for manifest in manifests:
        if is_crd(manifest):
            continue
        kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)
        checked += 1
    assert checked >= 20


def test_strict_validation_catches_a_typo() -> None:
    """The validator really is strict: an unknown field is refused, not ignored."""
    deployment = find(render(TARGETS["base"]), "Deployment", "tickertape-gateway")
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


def test_keda_resources_have_their_required_fields(manifests: list[Manifest]) -> None:
    scaled = find(manifests, "ScaledObject", "tickertape-runner")
    target = scaled["spec"]["scaleTargetRef"]
    find(manifests, target.get("kind", "Deployment"), target["name"])
    assert 1 <= scaled["spec"]["minReplicaCount"] <= scaled["spec"]["maxReplicaCount"]
    triggers = scaled["spec"]["triggers"]
    assert triggers and all(t["type"] == "redis-streams" for t in triggers)
    for trigger in triggers:
        meta = trigger["metadata"]
        assert meta["address"] == "tickertape-redis:6379"
        assert meta["stream"] in {"tt:queue", "tt:queue:high"}
        assert meta["consumerGroup"] == "runners"
        counts = [meta[k] for k in ("pendingEntriesCount", "lagCount", "streamLength") if k in meta]
        assert len(counts) == 1 and all(isinstance(v, str) and v.isdigit() for v in counts)
        find(manifests, "TriggerAuthentication", trigger["authenticationRef"]["name"])
    assert any("pendingEntriesCount" in t["metadata"] for t in triggers)
    auth = find(manifests, "TriggerAuthentication", "tickertape-redis")
    for ref in auth["spec"]["secretTargetRef"]:
        assert {"parameter", "name", "key"} <= set(ref)
        assert ref["key"] in find(manifests, "Secret", ref["name"])["stringData"]


def test_every_pod_is_restricted(manifests: list[Manifest]) -> None:
    assert {m["metadata"]["name"] for m in workloads(manifests)} == {
        "tickertape-redis",
        "tickertape-gateway",
        "tickertape-runner",
        "tickertape-projector",
    }
    for workload in workloads(manifests):
        pod = pod_spec(workload) or {}
        pod_ctx = pod.get("securityContext", {})
        assert pod_ctx.get("seccompProfile", {}).get("type") == "RuntimeDefault"
        assert pod.get("automountServiceAccountToken") is False
        for container in containers(workload):
            check_container_restricted(workload, pod, container)


def check_container_restricted(workload: Manifest, pod: dict[str, Any], container: dict[str, Any]) -> None:
    name = f"{workload['metadata']['name']}/{container['name']}"
    ctx = container.get("securityContext", {})
    pod_ctx = pod.get("securityContext", {})
    assert ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot")) is True, name
    uid = ctx.get("runAsUser", pod_ctx.get("runAsUser"))
    assert isinstance(uid, int) and uid > 0, name
    assert ctx.get("allowPrivilegeEscalation") is False, name
    assert ctx.get("capabilities", {}).get("drop") == ["ALL"], name
    assert not ctx.get("capabilities", {}).get("add"), name
    assert ctx.get("privileged", False) is False, name
    assert ctx.get("readOnlyRootFilesystem") is True, name
    mounts = {mount["mountPath"]: mount["name"] for mount in container.get("volumeMounts", [])}
    assert "/tmp" in mounts, f"{name} needs a writable /tmp"
    volumes = {volume["name"]: volume for volume in pod.get("volumes", [])}
    assert "emptyDir" in volumes[mounts["/tmp"]], name


def test_app_pods_run_the_image_as_its_user(manifests: list[Manifest]) -> None:
    for workload in workloads(manifests):
        component = workload["metadata"]["labels"]["app.kubernetes.io/component"]
        if component not in APP_COMPONENTS:
            continue
        pod = pod_spec(workload) or {}
        assert pod["securityContext"]["runAsUser"] == 10001
        (container,) = pod["containers"]
        assert container["args"] == [component]
        assert re.fullmatch(r"(.+/)?tickertape:[\w.-]+", container["image"])


def test_production_pins_the_image(production: list[Manifest]) -> None:
    for workload in workloads(production):
        for container in containers(workload):
            assert not container["image"].endswith(":latest"), container["image"]


def env_names(container: dict[str, Any]) -> set[str]:
    return {item["name"] for item in container.get("env", [])}


def test_redis_url_is_built_from_the_secret(manifests: list[Manifest]) -> None:
    for workload in workloads(manifests):
        if workload["metadata"]["labels"]["app.kubernetes.io/component"] not in APP_COMPONENTS:
            continue
        (container,) = containers(workload)
        env = container["env"]
        names = [item["name"] for item in env]
        assert names.index("REDIS_PASSWORD") < names.index("REDIS_URL"), "$(VAR) needs order"
        url = next(item["value"] for item in env if item["name"] == "REDIS_URL")
        assert url == "redis://:$(REDIS_PASSWORD)@tickertape-redis:6379/0"
        find(manifests, "Service", "tickertape-redis")


def test_secrets_reach_only_their_consumers(manifests: list[Manifest]) -> None:
    def secret_refs(name: str) -> set[str]:
        (container,) = containers(find(manifests, *name.split("/")))
        return {ref["secretRef"]["name"] for ref in container.get("envFrom", []) if "secretRef" in ref}

    assert secret_refs("Deployment/tickertape-gateway") == {"tickertape-gateway"}
    assert secret_refs("Deployment/tickertape-runner") == {"tickertape-llm-keys"}
    assert secret_refs("StatefulSet/tickertape-projector") == set()
    for secret in (m for m in manifests if m["kind"] == "Secret"):
        assert all(str(v).startswith("change-me") for v in secret["stringData"].values())


def probe_path(container: dict[str, Any], probe: str) -> tuple[str, int]:
    get = container[probe]["httpGet"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    port = get["port"] if isinstance(get["port"], int) else ports[get["port"]]
    return get["path"], port


def test_gateway_probes_and_port(manifests: list[Manifest]) -> None:
    (container,) = containers(find(manifests, "Deployment", "tickertape-gateway"))
    assert probe_path(container, "readinessProbe") == ("/readyz", 8000)
    assert probe_path(container, "livenessProbe") == ("/healthz", 8000)
    service = find(manifests, "Service", "tickertape-gateway")
    assert service["spec"]["ports"][0]["port"] == 8000


def test_runner_and_projector_health(manifests: list[Manifest]) -> None:
    (runner,) = containers(find(manifests, "Deployment", "tickertape-runner"))
    assert probe_path(runner, "livenessProbe") == ("/healthz", 8002)
    (projector,) = containers(find(manifests, "StatefulSet", "tickertape-projector"))
    assert probe_path(projector, "livenessProbe") == ("/healthz", 8001)
    assert find(manifests, "Service", "tickertape-projector")["spec"]["ports"][0]["port"] == 8001


def test_ports_match_the_configmap(manifests: list[Manifest]) -> None:
    settings = config(manifests)
    assert settings["TT_GATEWAY_PORT"] == "8000"
    assert settings["TT_PROJECTOR_PORT"] == "8001"
    assert settings["TT_RUNNER_PORT"] == "8002"
    assert settings["TT_PROJECTOR_URL"] == "http://tickertape-projector:8001"  # read by older gateways
    for host in ("TT_GATEWAY_HOST", "TT_PROJECTOR_HOST", "TT_RUNNER_HOST"):
        assert settings[host] == "0.0.0.0", "a pod must listen beyond loopback"


def test_runner_grace_covers_a_step_and_the_drain(manifests: list[Manifest]) -> None:
    settings = config(manifests)
    needed = float(settings["TT_STEP_TIMEOUT_S"]) + float(settings["TT_SHUTDOWN_GRACE_S"])
    runner = pod_spec(find(manifests, "Deployment", "tickertape-runner")) or {}
    assert runner["terminationGracePeriodSeconds"] >= needed
    assert float(settings["TT_RUN_DEADLINE_S"]) >= float(settings["TT_STEP_TIMEOUT_S"])
    assert float(settings["TT_LEASE_S"]) < float(settings["TT_STEP_TIMEOUT_S"])


def test_autoscaled_deployments_leave_replicas_to_the_autoscaler(manifests: list[Manifest]) -> None:
    hpa = find(manifests, "HorizontalPodAutoscaler", "tickertape-gateway")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "tickertape-gateway"
    assert hpa["spec"]["minReplicas"] >= 2
    for name in ("tickertape-gateway", "tickertape-runner"):
        assert "replicas" not in find(manifests, "Deployment", name)["spec"]


def redis_conf(manifests: list[Manifest]) -> dict[str, str]:
    text = find(manifests, "ConfigMap", "tickertape-redis-config")["data"]["redis.conf"]
    lines = [line.split(None, 1) for line in text.splitlines() if line and not line.startswith("#")]
    return {key: value for key, value in lines}


def test_redis_is_durable_and_never_evicts(manifests: list[Manifest]) -> None:
    conf = redis_conf(manifests)
    assert conf["appendonly"] == "yes"
    assert conf["appendfsync"] == "everysec"
    assert conf["maxmemory-policy"] == "noeviction"
    assert conf["dir"] == "/data"
    redis = find(manifests, "StatefulSet", "tickertape-redis")
    (container,) = containers(redis)
    assert container["command"][:2] == ["redis-server", "/etc/redis/redis.conf"]
    claims = {claim["metadata"]["name"] for claim in redis["spec"]["volumeClaimTemplates"]}
    assert {m["name"] for m in container["volumeMounts"] if m["mountPath"] == "/data"} <= claims


def test_redis_maxmemory_fits_its_limit(manifests: list[Manifest]) -> None:
    conf = redis_conf(manifests)
    (container,) = containers(find(manifests, "StatefulSet", "tickertape-redis"))
    limit = container["resources"]["limits"]["memory"]
    assert conf["maxmemory"].endswith("mb") and limit.endswith("Gi")
    assert int(conf["maxmemory"][:-2]) <= 0.8 * int(limit[:-2]) * 1024


def test_projector_replicas_each_have_a_volume_a_name_and_a_budget(manifests: list[Manifest]) -> None:
    projector = find(manifests, "StatefulSet", "tickertape-projector")
    assert projector["spec"]["replicas"] >= 2
    (container,) = containers(projector)
    claims = {claim["metadata"]["name"] for claim in projector["spec"]["volumeClaimTemplates"]}
    state = config(manifests)["TT_STATE_DIR"]
    assert {m["name"] for m in container["volumeMounts"] if m["mountPath"] == state} <= claims
    assert any(m["mountPath"] == state for m in container["volumeMounts"])
    names = {e["name"]: e.get("valueFrom", {}).get("fieldRef", {}) for e in container["env"]}
    assert names["TT_PROJECTOR_NAME"] == {"fieldPath": "metadata.name"}  # its group: projector:<pod>
    pdb = find(manifests, "PodDisruptionBudget", "tickertape-projector")
    assert pdb["spec"]["selector"]["matchLabels"] == projector["spec"]["selector"]["matchLabels"]
    assert 1 <= pdb["spec"]["minAvailable"] < projector["spec"]["replicas"]


def test_the_gateway_reads_every_projector_replica_by_its_stable_name(manifests: list[Manifest]) -> None:
    projector = find(manifests, "StatefulSet", "tickertape-projector")
    headless = find(manifests, "Service", projector["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["selector"] == projector["spec"]["selector"]["matchLabels"]
    port = headless["spec"]["ports"][0]["port"]
    sts, service = projector["metadata"]["name"], headless["metadata"]["name"]
    expected = [f"http://{sts}-{i}.{service}:{port}" for i in range(projector["spec"]["replicas"])]
    assert config(manifests)["TT_PROJECTOR_URLS"].split(",") == expected


def test_pdb_protects_the_gateway(manifests: list[Manifest]) -> None:
    pdb = find(manifests, "PodDisruptionBudget", "tickertape-gateway")
    deployment = find(manifests, "Deployment", "tickertape-gateway")
    assert pdb["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    assert pdb["spec"]["minAvailable"] >= 1


def test_network_policy_denies_by_default(manifests: list[Manifest]) -> None:
    deny = find(manifests, "NetworkPolicy", "default-deny-all")
    assert deny["spec"]["podSelector"] == {}
    assert set(deny["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny["spec"] and "egress" not in deny["spec"]


def allowed(manifests: list[Manifest], source: str, target: str, port: int) -> bool:
    """Whether the policies let ``source``'s pods open ``target``:``port`` (component names)."""
    return _egress_allows(manifests, source, target, port) and _ingress_allows(
        manifests, source, target, port
    )


def _selects(selector: dict[str, Any], component: str) -> bool:
    labels = {
        "app.kubernetes.io/name": "tickertape",
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": "tickertape",
    }
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def _peer_is(peer: dict[str, Any], component: str) -> bool:
    in_namespace = "podSelector" in peer and "namespaceSelector" not in peer
    return in_namespace and _selects(peer["podSelector"], component)


def _rules(manifests: list[Manifest], component: str, direction: str) -> list[dict[str, Any]]:
    policies = [m for m in manifests if m["kind"] == "NetworkPolicy"]
    return [
        rule
        for policy in policies
        if _selects(policy["spec"]["podSelector"], component)
        for rule in policy["spec"].get(direction, [])
    ]


def _port_ok(rule: dict[str, Any], port: int) -> bool:
    return any(p["port"] == port for p in rule.get("ports", [])) or "ports" not in rule


def _egress_allows(manifests: list[Manifest], source: str, target: str, port: int) -> bool:
    return any(
        _port_ok(rule, port) and any(_peer_is(peer, target) for peer in rule.get("to", []))
        for rule in _rules(manifests, source, "egress")
    )


def _ingress_allows(manifests: list[Manifest], source: str, target: str, port: int) -> bool:
    return any(
        _port_ok(rule, port) and any(_peer_is(peer, source) for peer in rule.get("from", []))
        for rule in _rules(manifests, target, "ingress")
    )


FLOWS = [
    ("gateway", "projector", 8001, True),
    ("gateway", "redis", 6379, True),
    ("runner", "redis", 6379, True),
    ("projector", "redis", 6379, True),
    ("runner", "projector", 8001, False),
    ("runner", "gateway", 8000, False),
    ("projector", "gateway", 8000, False),
    ("redis", "gateway", 8000, False),
    ("gateway", "runner", 8002, False),
    ("gateway", "redis", 6380, False),
]


@pytest.mark.parametrize(("source", "target", "port", "expected"), FLOWS)
def test_network_flows(
    manifests: list[Manifest], source: str, target: str, port: int, expected: bool
) -> None:
    assert allowed(manifests, source, target, port) is expected


def test_external_flows(manifests: list[Manifest]) -> None:
    gateway_in = _rules(manifests, "gateway", "ingress")
    ingress_ns = [
        peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
        for rule in gateway_in
        for peer in rule["from"]
        if _port_ok(rule, 8000) and "namespaceSelector" in peer
    ]
    assert "ingress-nginx" in ingress_ns
    https_out = [
        rule
        for rule in _rules(manifests, "runner", "egress")
        if any("ipBlock" in peer for peer in rule["to"])
    ]
    assert https_out and all([p["port"] for p in rule["ports"]] == [443] for rule in https_out)
    for component in ("gateway", "projector", "redis"):
        rules = _rules(manifests, component, "egress")
        assert not any("ipBlock" in peer for rule in rules for peer in rule.get("to", []))
    dns = find(manifests, "NetworkPolicy", "allow-dns")
    assert {p["port"] for rule in dns["spec"]["egress"] for p in rule["ports"]} == {53}


def test_ingress_is_sse_friendly(production: list[Manifest]) -> None:
    ingress = find(production, "Ingress", "tickertape")
    notes = ingress["metadata"]["annotations"]
    assert notes["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
    assert int(notes["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 600
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    service = find(production, "Service", backend["name"])
    assert backend["port"]["name"] in {port["name"] for port in service["spec"]["ports"]}


def test_production_namespace_enforces_restricted(production: list[Manifest]) -> None:
    namespace = find(production, "Namespace", "tickertape")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    namespaced = [m for m in production if m["kind"] != "Namespace"]
    assert all(m["metadata"]["namespace"] == "tickertape" for m in namespaced)


def test_production_overlay_patches_apply(production: list[Manifest]) -> None:
    assert config(production)["TT_OTEL_EXPORTER"] == "otlp"
    (gateway,) = containers(find(production, "Deployment", "tickertape-gateway"))
    assert gateway["resources"]["requests"]["cpu"] == "500m"
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/readyz", "merge kept the base"
    assert find(production, "ScaledObject", "tickertape-runner")["spec"]["maxReplicaCount"] == 40


def test_every_file_under_k8s_is_rendered() -> None:
    """A manifest file that no kustomization lists would silently never be deployed."""
    listed: set[Path] = set()
    for directory in TARGETS.values():
        spec = load_documents(directory / "kustomization.yaml")[0]
        listed |= {(directory / entry).resolve() for entry in spec.get("resources", [])}
        listed |= {(directory / patch["path"]).resolve() for patch in spec.get("patches", [])}
    files = {path.resolve() for path in K8S.rglob("*.yaml") if path.name != "kustomization.yaml"}
    assert files - listed == set()


def container_env(manifests: list[Manifest], kind: str, name: str) -> dict[str, str]:
    """The environment a container would see: ConfigMap, Secrets, then its own ``env``."""
    (container,) = containers(find(manifests, kind, name))
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env |= find(manifests, "ConfigMap", source["configMapRef"]["name"])["data"]
        else:
            env |= find(manifests, "Secret", source["secretRef"]["name"])["stringData"]
    for item in container.get("env", []):
        ref = item.get("valueFrom", {}).get("secretKeyRef")
        value = find(manifests, "Secret", ref["name"])["stringData"][ref["key"]] if ref else None
        value = value or re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], item.get("value", ""))
        env[item["name"]] = value or f"{name}-0"
    return env


def test_services_accept_their_configuration(manifests: list[Manifest]) -> None:
    """The real settings classes parse what the manifests give each container."""
    from shared.config import Env

    gateway = pytest.importorskip("services.gateway.settings")
    runner = pytest.importorskip("services.runner.settings")
    projector = pytest.importorskip("services.projector.settings")
    gw = gateway.GatewaySettings.from_env(Env(container_env(manifests, "Deployment", "tickertape-gateway")))
    assert gw.auth is True and gw.port == 8000 and gw.host == "0.0.0.0"
    assert gw.projector_url == "http://tickertape-projector:8001"
    urls = getattr(gw, "projector_urls", None)  # the gateway's replica list, where it reads one
    assert urls is None or len(urls) == 2
    run = runner.RunnerSettings.from_env(Env(container_env(manifests, "Deployment", "tickertape-runner")))
    assert run.port == 8002 and run.host == "0.0.0.0"
    assert run.common.redis_url.startswith("redis://:change-me")
    proj = projector.ProjectorSettings.from_env(
        Env(container_env(manifests, "StatefulSet", "tickertape-projector"))
    )
    assert proj.port == 8001 and proj.host == "0.0.0.0"
    assert (proj.name, proj.group) == ("tickertape-projector-0", "projector:tickertape-projector-0")
    assert proj.db_path.is_relative_to("/var/lib/tickertape")
    assert proj.snapshot_dir.is_relative_to("/var/lib/tickertape")
