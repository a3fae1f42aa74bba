"""Just enough kustomize to render Tickertape's manifests offline (no kustomize binary).

Supports what deploy/k8s uses and refuses anything else, so a new feature in a kustomization
fails the tests loudly instead of being ignored: ``resources`` (files and directories),
``namespace``, ``images`` and ``patches`` with a ``path`` to strategic-merge patches (maps
merge, lists of named items merge by ``name``, other lists are replaced, null deletes).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]

Manifest = dict[str, Any]

SUPPORTED = {"apiVersion", "kind", "namespace", "resources", "images", "patches"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume", "StorageClass"}


class KustomizeError(Exception):
    """The kustomization uses something this renderer does not implement, or is wrong."""


def load_documents(path: Path) -> list[Manifest]:
    """Every non-empty YAML document of a file."""
    docs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    for doc in docs:
        if not isinstance(doc, dict) or "kind" not in doc:
            raise KustomizeError(f"{path}: not a Kubernetes object")
    return docs


def render(directory: Path) -> list[Manifest]:
    """The manifests ``kustomize build directory`` would print (for the supported subset)."""
    spec = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(spec) - SUPPORTED
    if unknown:
        raise KustomizeError(f"{directory}: unsupported kustomization fields {sorted(unknown)}")
    manifests: list[Manifest] = []
    for entry in spec.get("resources", []):
        target = directory / entry
        manifests += render(target) if target.is_dir() else load_documents(target)
    for patch in spec.get("patches", []):
        if set(patch) != {"path"}:
            raise KustomizeError(f"{directory}: only `patches: - path:` is supported, got {patch}")
        for doc in load_documents(directory / patch["path"]):
            apply_patch(manifests, doc)
    for image in spec.get("images", []):
        set_image(manifests, image)
    if "namespace" in spec:
        for manifest in manifests:
            if manifest["kind"] not in CLUSTER_SCOPED:
                manifest.setdefault("metadata", {})["namespace"] = spec["namespace"]
    check_unique(manifests)
    return manifests


def identity(manifest: Manifest) -> tuple[str, str, str]:
    group = manifest["apiVersion"].rpartition("/")[0]
    return (group, manifest["kind"], manifest["metadata"]["name"])


def check_unique(manifests: list[Manifest]) -> None:
    seen: set[tuple[str, str, str]] = set()
    for manifest in manifests:
        key = identity(manifest)
        if key in seen:
            raise KustomizeError(f"duplicate resource {key}")
        seen.add(key)


def apply_patch(manifests: list[Manifest], patch: Manifest) -> None:
    """Merge ``patch`` into the one manifest with its group, kind and name."""
    matches = [m for m in manifests if identity(m) == identity(patch)]
    if len(matches) != 1:
        raise KustomizeError(f"patch target {identity(patch)} matched {len(matches)} resources")
    merged = merge(matches[0], patch)
    matches[0].clear()
    matches[0].update(merged)


def merge(base: Any, patch: Any) -> Any:
    """A strategic merge of ``patch`` onto ``base`` (a new value; the inputs are untouched)."""
    if isinstance(base, dict) and isinstance(patch, dict):
        result = copy.deepcopy(base)
        for key, value in patch.items():
            if value is None:
                result.pop(key, None)
            else:
                result[key] = merge(base[key], value) if key in base else copy.deepcopy(value)
        return result
    if _named_list(base) and _named_list(patch):
        result_list = copy.deepcopy(base)
        index = {item["name"]: i for i, item in enumerate(result_list)}
        for item in patch:
            if item["name"] in index:
                result_list[index[item["name"]]] = merge(result_list[index[item["name"]]], item)
            else:
                result_list.append(copy.deepcopy(item))
        return result_list
    return copy.deepcopy(patch)


def _named_list(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(item, dict) and "name" in item for item in value)
    )


def pod_spec(manifest: Manifest) -> dict[str, Any] | None:
    """The pod spec of a workload (Deployment, StatefulSet, DaemonSet, Job), else None."""
    template = manifest.get("spec", {}).get("template")
    if manifest["kind"] in {"Deployment", "StatefulSet", "DaemonSet", "Job"} and template:
        spec: dict[str, Any] = template["spec"]
        return spec
    return None


def containers(manifest: Manifest) -> list[dict[str, Any]]:
    spec = pod_spec(manifest) or {}
    return [*spec.get("initContainers", []), *spec.get("containers", [])]


def set_image(manifests: list[Manifest], image: dict[str, str]) -> None:
    """The ``images`` transformer: rename and retag containers whose image is ``name``."""
    used = False
    for manifest in manifests:
        for container in containers(manifest):
            name = container["image"].split("@")[0].rsplit(":", 1)[0]
            if name == image["name"]:
                tag = image.get("newTag", container["image"].rpartition(":")[2])
                container["image"] = f"{image.get('newName', name)}:{tag}"
                used = True
    if not used:
        raise KustomizeError(f"image {image['name']} is used by no container")
