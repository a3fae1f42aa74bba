"""A gateway of several processes (``TT_GATEWAY_WORKERS``): one port, every worker serving, one
health answer naming the process that was started, metrics summed, stopping together."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from services.gateway.settings import MAX_AUTO_WORKERS, GatewaySettings, auto_workers
from services.gateway.workers import worker_env
from shared.config import Env
from shared.redis_server import free_port

ROOT = Path(__file__).resolve().parents[2]


class Gateway:
    """``python -m services.gateway`` as ``tickertape up`` starts it, with two workers."""

    def __init__(self, redis_url: str, state: Path, workers: int = 2) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "REDIS_URL": redis_url,
            "TT_STATE_DIR": str(state),
            "TT_GATEWAY_PORT": str(self.port),
            "TT_GATEWAY_WORKERS": str(workers),
            "TT_PROJECTOR_URL": "http://127.0.0.1:9",
            "TT_LOG_LEVEL": "WARNING",
        }
        self.answered = 0
        """/healthz requests answered so far (what the summed metrics must count)."""
        self.process = subprocess.Popen([sys.executable, "-m", "services.gateway"], env=env, cwd=ROOT)

    def wait_healthy(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"the gateway exited with {self.process.returncode}"
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200:
                    self.answered += 1
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError("gateway not healthy")

    def health(self) -> dict[str, int]:
        """One /healthz on a new connection (so the kernel picks a worker each time)."""
        answer: dict[str, int] = httpx.get(f"{self.url}/healthz", timeout=5.0).json()
        self.answered += 1
        return answer

    def workers(self) -> set[int]:
        return {
            int(pid)
            for pid in Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
        }

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(30)


@contextlib.contextmanager
def started(redis_url: str, state: Path) -> Iterator[Gateway]:
    gateway = Gateway(redis_url, state)
    try:
        gateway.wait_healthy()
        yield gateway
    finally:
        if gateway.process.poll() is None:
            gateway.process.kill()
        gateway.process.wait(30)


@pytest.fixture(scope="module")
def shared(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """One gateway for the tests that leave it running (a start is seconds: two apps load)."""
    with started(redis_url, tmp_path_factory.mktemp("workers")) as gateway:
        yield gateway


@pytest.fixture
def gateway(redis_url: str, tmp_path: Path) -> Iterator[Gateway]:
    """A gateway of its own, for a test that stops it."""
    with started(redis_url, tmp_path) as gateway:
        yield gateway


def _until_both_answered(gateway: Gateway, limit: int = 200) -> tuple[list[dict[str, int]], set[int]]:
    answers: list[dict[str, int]] = []
    workers = gateway.workers()
    while len(answers) < limit and {a["worker"] for a in answers} != workers:
        answers.append(gateway.health())
    return answers, workers


def test_every_worker_serves_the_port_and_health_names_the_process_started(shared: Gateway) -> None:
    gateway = shared
    answers, workers = _until_both_answered(gateway)
    assert len(workers) == 2
    assert {a["worker"] for a in answers} == workers  # SO_REUSEPORT: each worker takes connections
    assert {a["pid"] for a in answers} == {gateway.process.pid}  # what `tickertape up` checks


def test_metrics_are_summed_over_the_workers(shared: Gateway) -> None:
    gateway = shared
    answers, _ = _until_both_answered(gateway)
    assert len({a["worker"] for a in answers}) == 2
    text = httpx.get(f"{gateway.url}/metrics", timeout=5.0).text
    line = re.search(r'tickertape_http_requests_total\{[^}]*route="/healthz"[^}]*\} (\S+)', text)
    assert line is not None, text
    assert float(line.group(1)) == gateway.answered  # every worker's, not the one answering


def test_a_run_submitted_on_one_worker_is_followed_on_every_worker(shared: Gateway) -> None:
    gateway = shared
    _, workers = _until_both_answered(gateway)
    posted = httpx.post(
        f"{gateway.url}/api/trading/runs", json={"symbol": "NVDA", "analysts": ["market"]}, timeout=10.0
    )
    assert posted.status_code == 202, posted.text
    path = f"{gateway.url}/api/trading/runs/{posted.json()['runId']}/events"
    for _ in range(8):  # new connections: spread over the workers, each with a hub of its own
        with httpx.stream("GET", path, timeout=10.0) as stream:
            assert stream.status_code == 200
            first = next(line for line in stream.iter_lines() if line.startswith("event: "))
        assert first == "event: RunRequested"
    assert len(workers) == 2


def test_a_worker_that_dies_stops_the_gateway(gateway: Gateway) -> None:
    victim, *others = sorted(gateway.workers())
    os.kill(victim, signal.SIGKILL)
    assert gateway.process.wait(30) != 0  # what started it restarts it whole
    for pid in others:
        assert not Path(f"/proc/{pid}").exists() or _is_zombie(pid)


def test_sigterm_stops_the_workers_and_then_the_supervisor(gateway: Gateway) -> None:
    workers = gateway.workers()
    assert gateway.stop() == 0
    assert all(not Path(f"/proc/{pid}").exists() or _is_zombie(pid) for pid in workers)


def test_a_killed_supervisor_takes_its_workers_and_their_streams_down_at_once(gateway: Gateway) -> None:
    """As a one-process gateway's death would: its clients are cut now, not after a graceful
    shutdown that waits for their streams (seconds), and they resume on another gateway."""
    workers = gateway.workers()
    posted = httpx.post(f"{gateway.url}/api/trading/runs", json={"symbol": "NVDA", "analysts": ["market"]})
    path = f"{gateway.url}/api/trading/runs/{posted.json()['runId']}/events"
    with httpx.stream("GET", path, timeout=30.0) as stream:
        lines = stream.iter_lines()
        assert next(line for line in lines if line.startswith("event: ")) == "event: RunRequested"
        gateway.process.kill()
        killed = time.monotonic()
        with contextlib.suppress(httpx.HTTPError):
            for _ in lines:
                pass
        cut_after_s = time.monotonic() - killed
    assert cut_after_s < 3.0  # uvicorn's graceful shutdown would hold the stream 5 s
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{pid}").exists() and not _is_zombie(pid) for pid in workers):
        assert time.monotonic() < deadline, "a worker outlived its supervisor"
        time.sleep(0.05)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_workers_default_to_one_per_usable_cpu_up_to_the_cap() -> None:
    assert GatewaySettings.from_env(Env({})).workers == auto_workers()
    assert auto_workers() == min(len(os.sched_getaffinity(0)), MAX_AUTO_WORKERS)
    assert GatewaySettings.from_env(Env({"TT_GATEWAY_WORKERS": "1"})).workers == 1
    assert GatewaySettings.from_env(Env({"TT_GATEWAY_WORKERS": "3"})).workers == 3


def test_workers_share_the_session_secret_and_get_process_ids_of_their_own(tmp_path: Path) -> None:
    """A session cookie signed by one worker is honoured by every other (secret random per process
    when unset); wake-up streams and Redis client names stay per process."""
    settings = GatewaySettings.from_env(Env({"TT_GATEWAY_PROCESS_ID": "gw"}))
    envs = [worker_env(settings, 8000, k, tmp_path) for k in range(2)]
    assert {env["TT_SESSION_SECRET"] for env in envs} == {settings.session_secret}
    assert [env["TT_GATEWAY_PROCESS_ID"] for env in envs] == ["gw-w0", "gw-w1"]
    assert {env["TT_GATEWAY_SUPERVISOR_PID"] for env in envs} == {str(os.getpid())}
