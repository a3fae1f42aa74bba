"""The rendered Kubernetes base, made playable by ``podman kube play`` on one host.

Kept from the base as they are: the Deployments and StatefulSets of gateway, runner and projector
with their images' args, ConfigMap-driven settings, security contexts, probes and volumes.
Changed only where podman or a single host cannot do what a cluster does:

- StatefulSets become Deployments of one pod (podman 4 plays no StatefulSet) and their
  volumeClaimTemplates become emptyDir volumes;
- Secrets become ConfigMaps (podman 4.3 plays no Secret objects), env ``fieldRef``s become the
  workload's name, and the LLM keys are left out (the run uses the offline model);
- every pod uses the host network (no cluster DNS or Services): ports, the projector URL and
  REDIS_URL point at 127.0.0.1 and the free ports the caller chose, and the containers declare
  no ports (podman would map them);
- httpGet probes become exec probes making the same GET with the image's Python;
- Redis, Services, autoscalers, disruption budgets, NetworkPolicy and the ServiceAccount are left
  out (Redis is the test's own server; the rest are cluster objects with nothing to run).
"""

from __future__ import annotations

import copy
import shlex
from dataclasses import dataclass
from typing import Any

from tests.deploy.kustomize import Manifest

COMPONENTS = ("gateway", "runner", "projector")
LLM_SECRET = "tickertape-llm-keys"
# podman runs an httpGet probe as `curl` inside the container, and the image has no curl: the
# same GET from the image's own Python (urlopen raises on a non-2xx answer, so the exit code is 1).
# podman 4 joins an exec probe's words with spaces and runs them with `sh -c`: one quoted line.
HTTP_PROBE = "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=3)"


@dataclass(frozen=True)
class Ports:
    gateway: int
    projector: int
    runner: int


def component(manifest: Manifest) -> str | None:
    labels = manifest.get("metadata", {}).get("labels", {})
    name = labels.get("app.kubernetes.io/component")
    return name if name in COMPONENTS else None


def settings(manifests: list[Manifest], ports: Ports, overrides: dict[str, str]) -> list[Manifest]:
    """The ConfigMap with host ports, and each Secret as a ConfigMap of the same name."""
    out: list[Manifest] = []
    for manifest in manifests:
        if manifest["kind"] == "ConfigMap":
            data = dict(manifest["data"])
            data.update(
                TT_GATEWAY_HOST="127.0.0.1",
                TT_GATEWAY_PORT=str(ports.gateway),
                TT_PROJECTOR_HOST="127.0.0.1",
                TT_PROJECTOR_PORT=str(ports.projector),
                TT_PROJECTOR_URL=f"http://127.0.0.1:{ports.projector}",
                TT_RUNNER_HOST="127.0.0.1",
                TT_RUNNER_PORT=str(ports.runner),
            )
            if "TT_PROJECTOR_URLS" in data:
                data["TT_PROJECTOR_URLS"] = f"http://127.0.0.1:{ports.projector}"
            data.update({k: v for k, v in overrides.items() if k in data})
            out.append({**manifest, "data": data})
        elif manifest["kind"] == "Secret" and manifest["metadata"]["name"] != LLM_SECRET:
            data = {k: overrides.get(k, v) for k, v in manifest.get("stringData", {}).items()}
            out.append(
                {"apiVersion": "v1", "kind": "ConfigMap", "metadata": manifest["metadata"], "data": data}
            )
    return out


def host_container(container: dict[str, Any], redis_url: str, port: int) -> None:
    """Point one container at the host's ports and Redis; secrets by ConfigMap; no LLM keys."""
    env: list[dict[str, Any]] = []
    for var in container.get("env", []):
        if var["name"] == "REDIS_URL":
            var = {"name": "REDIS_URL", "value": redis_url}
        elif var["name"] == "REDIS_PASSWORD":
            continue
        env.append(var)
    container["env"] = env
    sources = []
    for source in container.get("envFrom", []):
        if "secretRef" in source:
            if source["secretRef"]["name"] == LLM_SECRET:
                continue
            source = {"configMapRef": source["secretRef"]}
        sources.append(source)
    container["envFrom"] = sources
    # On the host network podman refuses port mappings, and a declared port is one.
    container.pop("ports", None)
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        if probe in container and "httpGet" in container[probe]:
            path = container[probe].pop("httpGet")["path"]
            line = shlex.join(["python", "-c", HTTP_PROBE, f"http://127.0.0.1:{port}{path}"])
            container[probe]["exec"] = {"command": [line]}


def workload(manifest: Manifest, redis_url: str, ports: Ports, image: str, suffix: str) -> Manifest:
    name = component(manifest)
    assert name is not None
    played = copy.deepcopy(manifest)
    # A suffix keeps pod names apart when two test sessions play at once.
    played["metadata"]["name"] = f"{played['metadata']['name']}-{suffix}"
    spec = played["spec"]
    if played["kind"] == "StatefulSet":
        played["kind"] = "Deployment"
        for claim in spec.pop("volumeClaimTemplates", []):
            spec["template"]["spec"].setdefault("volumes", []).append(
                {"name": claim["metadata"]["name"], "emptyDir": {}}
            )
        spec.pop("serviceName", None)
        spec.pop("podManagementPolicy", None)
    spec["replicas"] = 1
    pod = spec["template"]["spec"]
    pod["hostNetwork"] = True
    for container in pod["containers"]:
        for var in container.get("env", []):
            if "fieldRef" in var.get("valueFrom", {}):
                var.pop("valueFrom")
                var["value"] = played["metadata"]["name"]
        host_container(container, redis_url, getattr(ports, name))
        container["image"] = image
        container["imagePullPolicy"] = "Never"
    return played


def playable(
    manifests: list[Manifest],
    *,
    image: str,
    redis_url: str,
    ports: Ports,
    suffix: str,
    overrides: dict[str, str],
) -> list[Manifest]:
    """What ``podman kube play`` gets: settings first, then one workload per component, each
    running ``image`` (already built: never pulled) and named ``<workload>-<suffix>``."""
    workloads = [
        workload(manifest, redis_url, ports, image, suffix)
        for manifest in manifests
        if manifest["kind"] in ("Deployment", "StatefulSet") and component(manifest)
    ]
    assert sorted(component(w) or "" for w in workloads) == sorted(COMPONENTS)
    return settings(manifests, ports, overrides) + workloads
