"""Row 9's peers: arq, saq, taskiq and bullmq on the LLM-bound job, each in its own virtualenv.

Their Redis-client pins conflict with Tickertape's (arq wants redis < 6, the project runs 8), so
each peer is installed once, by pip, into ``$PEERS_HOME/llm-<peer>`` (default
``~/.cache/tickertape-peers``, beside the team harness's no-op venvs) with the versions the team
harness pins, and ``bench/peer_llm_jobs.py`` runs there. Each peer gets a fresh simulator
(the same latency distributions and seed as Tickertape's run) whose ``/stats`` give the model time.

Each peer has a wall-time limit (``BENCH_PEER_LIMIT_S``, default 150 s + 50 ms a job): at the limit
it reports the jobs completed so far; a child that does not answer ``GRACE_S`` after it is killed
with its worker (one process group) and reported as such, so no peer can hold up the others.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.common import ROOT
from bench.llm_workload import WAIT_BASE_S, WAIT_PER_RUN_S, sim_env, started
from tests.support.processes import ServiceProcess

logger = logging.getLogger(__name__)

PEERS = ("arq", "saq", "taskiq", "bullmq")
PINS = {
    "arq": ["arq==0.28.0"],
    "saq": ["saq[redis,hiredis]==0.26.4", "typing_extensions"],
    "taskiq": ["taskiq==0.13.0", "taskiq-redis==1.2.4"],
    "bullmq": ["bullmq==3.4.4"],
}
"""The team harness's pins (../shared/peers/run-peers.sh), so rows 2 and 9 measure the same releases."""
EXTRAS = ["httpx", "redis", "hiredis", "psutil"]
GRACE_S = 60.0
"""How long past its limit a peer's measurement may take to stop and print (stopping its worker)."""
HOME = Path(os.environ.get("PEERS_HOME", str(Path.home() / ".cache" / "tickertape-peers")))
JOBS = ROOT / "bench" / "peer_llm_jobs.py"
PROGRESS = {
    "arq": "PUBLISH on arq's connection (arq has no progress API)",
    "saq": "job.update (SET + PUBLISH), read through queue.listen",
    "taskiq": "ProgressTracker.set_progress (result-backend key), polled every 50 ms (no push)",
    "bullmq": "job.updateProgress (events stream), read through QueueEvents",
}


@dataclass(slots=True)
class PeerRun:
    """One peer at one size: what ``peer_llm_jobs.py`` printed, plus the simulator's model time."""

    peer: str
    n: int
    completed: int = 0
    wall_s: float = 0.0
    enqueue_s: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    worker_cpu_s: float = 0.0
    worker_rss_idle_mb: float = 0.0
    worker_rss_peak_mb: float = 0.0
    simulated_s: float = 0.0
    limit_s: float = 0.0
    error: str = ""


def limit_s(n: int) -> float:
    """BENCH_PEER_LIMIT_S: one peer's wall-time limit at ``n`` in flight (by default as long as
    Tickertape's runs are waited for)."""
    raw = os.environ.get("BENCH_PEER_LIMIT_S", "")
    return float(raw) if raw else WAIT_BASE_S + WAIT_PER_RUN_S * n


def venv(peer: str) -> Path:
    """The peer's interpreter, installed on first use (a minute; cached afterwards). The marker is
    written only after pip succeeded, so an interrupted install is redone, not half-used."""
    home = HOME / f"llm-{peer}"
    python, marker = home / "bin" / "python", home / "installed.txt"
    wanted = " ".join([*PINS[peer], *EXTRAS])
    if not marker.exists() or marker.read_text() != wanted:
        logger.info("installing %s into %s", peer, home)
        subprocess.run([sys.executable, "-m", "venv", str(home)], check=True, capture_output=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                        *PINS[peer], *EXTRAS], check=True, capture_output=True, timeout=900)  # fmt: skip
        marker.write_text(wanted)
    return python


def run_child(argv: list[str], limit: float) -> tuple[int, str, str]:
    """The measurement in a process group of its own: past its limit and grace the group (the
    measurement and the peer's worker) is killed, and what it printed so far is kept."""
    child = subprocess.Popen(
        argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": ""}, start_new_session=True,
    )  # fmt: skip
    try:
        out, err = child.communicate(timeout=limit + GRACE_S)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        out, err = child.communicate()
        err += f"\nkilled: no answer {limit + GRACE_S:.0f} s after the start (limit {limit:.0f} s)"
    return child.returncode, out, err


def run_peer(peer: str, n: int, redis_url: str, workdir: Path) -> PeerRun:
    """One measurement of ``peer`` with ``n`` jobs in flight (the Redis at ``redis_url`` is flushed)."""
    try:
        python = venv(peer)
    except (subprocess.SubprocessError, OSError) as exc:
        return PeerRun(peer, n, error=f"install failed: {exc}"[:200])
    with ExitStack() as stop:
        sim = started(
            stop, ServiceProcess("llmsim", sim_env(), port_var="TT_LLMSIM_PORT", log_dir=workdir / "logs")
        )
        limit = limit_s(n)
        argv = [str(python), str(JOBS), "run", peer, str(n), redis_url, sim.url, str(limit)]
        code, out, err = run_child(argv, limit)
        (workdir / f"peer-{peer}-{n}.log").write_text(out + err)
        stats = httpx.get(f"{sim.url}/stats", timeout=10).json()
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if not lines:
        tail = (err.strip().splitlines() or ["no output"])[-1]
        return PeerRun(peer, n, limit_s=limit, error=f"exit {code}: {tail}"[:200])
    doc = json.loads(lines[-1])
    doc.pop("peer", None)
    doc.pop("n", None)
    return PeerRun(peer, n, simulated_s=float(stats["simulated_s"]), **doc)


def measure(n: int, redis_url: str, workdir: Path, peers: tuple[str, ...] = PEERS) -> list[PeerRun]:
    workdir.mkdir(parents=True, exist_ok=True)
    results = []
    for peer in peers:
        logger.info("llm peer %s: %d in flight", peer, n)
        results.append(run_peer(peer, n, redis_url, workdir))
    return results
