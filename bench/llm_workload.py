"""One LLM-bound workload, measured end to end (issue 20): what users run, not no-op jobs.

A run is the built-in trading pipeline with five analysts: eighteen sequential model calls (each
analyst asks for its tool, then writes its report; bull, bear, the research manager; the
trader's JSON; three risk voices; the final JSON) through the runner's own OpenAI-compatible
client against ``python -m services.llmsim`` (1-3 s a call), with progress events between them.
Processes, all real, on loopback: the simulator, one runner
(``TT_RUNNER_CONCURRENCY`` = the runs in flight), one gateway serving the watchers, and watcher
processes (``bench.watchers``) following runs over SSE. The runner starts idle (its baseline
RSS and CPU), then every run is submitted at once (a burst of users), then the watchers open.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from redis.asyncio import Redis

from bench.common import ROOT, cpu_seconds, quick, rss_mb
from bench.sse_fanout import gateway_connections
from shared import streamids
from shared.events import RunCompleted, RunRequested, RunStarted, is_terminal
from shared.ids import new_run_id
from shared.keys import Keys
from shared.redis_io import connect
from shared.store import EventStore
from shared.submits import Submitted
from tests.support.processes import ServiceProcess

USER = "local"
"""The gateway's caller when auth is off: the watchers may read these runs."""
ANALYSTS = ("market", "fundamentals", "news", "sentiment", "risk")
SIM_ENV = {
    "TT_LLMSIM_TTFT_S": "uniform:0.3,0.8",
    "TT_LLMSIM_TOKENS_PER_S": "uniform:80,160",
    "TT_LLMSIM_COMPLETION_TOKENS": "uniform:100,200",
    "TT_LLMSIM_SEED": "20",
}
"""A call takes 0.3-0.8 s to its first token, then 100-200 tokens at 80-160/s: ~1-3 s, mean ~1.8 s."""
QUICK_SIM_ENV = {**SIM_ENV, "TT_LLMSIM_TTFT_S": "uniform:0.05,0.1", "TT_LLMSIM_TOKENS_PER_S": "fixed:1000"}
"""BENCH_QUICK: calls of ~0.15-0.3 s, so a smoke run of the section takes seconds."""
WATCHERS_PER_PROC = 2500
MAX_WATCHER_PROCS = 4
GATEWAY_ID = "bench-llm"
WAIT_BASE_S, WAIT_PER_RUN_S = 150.0, 0.05
"""How long the runs may take before the size is reported as it stands (completed < 100 %): a
10-call run is ~18 s; 5,000 in flight get 400 s, time for one core to spend 80 ms on each."""


@dataclass(slots=True)
class Outcome:
    """What one workload measured."""

    runs: int
    completed: int = 0
    takeovers: int = 0
    wall_s: float = 0.0
    run_s: list[float] = field(default_factory=list)
    simulated_s: float = 0.0
    sim_statuses: dict[str, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    watchers: int = 0
    watchers_ended: int = 0
    loadgen_cpu_s: list[float] = field(default_factory=list)
    runner_cpu_s: float = 0.0
    sim_cpu_s: float = 0.0
    """The simulator's CPU over the same span: the load, on the same cores, not the runner's."""
    runner_rss_idle_mb: float = 0.0
    runner_rss_peak_mb: float = 0.0
    gateway_rss_before_mb: float = 0.0
    gateway_rss_peak_mb: float = 0.0
    gateway_connections: list[int] = field(default_factory=list)
    gateway_cpu_s: float = 0.0
    """The gateway's CPU (every process of it) from the submits to the last run's end."""
    redis_cpu_s: float = 0.0
    """Redis's whole CPU (commands and network) from the submits to the last run's end."""
    redis_calls: int = 0
    redis_top: list[tuple[str, int, float]] = field(default_factory=list)
    """The commands that took Redis longest: (name, calls, µs inside them)."""

    @property
    def overhead_share(self) -> float:
        """End-to-end run time beyond the simulated model time, as a share of it all."""
        if not self.run_s or not self.completed:
            return float("nan")
        mean_run = sum(self.run_s) / len(self.run_s)
        return 1 - (self.simulated_s / self.completed) / mean_run


@dataclass(frozen=True, slots=True)
class Shape:
    """How much: runs in flight, watchers per watched run, runs watched, watchers on the first run;
    ``pipeline`` overrides BENCH_LLM_PIPELINE (row 9 runs the peers' job, ``calls``)."""

    runs: int
    per_run: int = 1
    watched: int = 0
    on_one: int = 0
    pipeline: str = ""
    gateway_workers: int = 0
    """``TT_GATEWAY_WORKERS`` (0: the gateway's default, as ``tickertape up`` starts it; row 8
    measures one process, 1)."""

    def paths(self, runs: Sequence[str]) -> list[str]:
        path = "/api/trading/runs/{}/events"
        out = [path.format(r) for r in runs[: self.watched] for _ in range(self.per_run)]
        return out + [path.format(runs[0])] * self.on_one


def models_file(workdir: Path, sim_url: str) -> Path:
    path = workdir / "llm-models.toml"
    path.write_text(
        f'[models.sim]\nlabel = "llmsim"\nprovider = "openai"\nbase_url = "{sim_url}/v1"\n'
        'model = "sim-1"\nmax_tokens = 1024\njson_mode = true\ntimeout_s = 120\n'
    )
    return path


def pipeline() -> str:
    """BENCH_LLM_PIPELINE: ``trading`` (the built-in pipeline, default) or ``calls`` (ten bare
    model calls: Tickertape's own cost without the analysis, bench/calls_pipeline.py)."""
    return os.environ.get("BENCH_LLM_PIPELINE", "trading")


def sim_env() -> dict[str, str]:
    return QUICK_SIM_ENV if quick() else SIM_ENV


START_TIMEOUT_S = 90.0
"""A service's first /healthz: seconds on a quiet machine, over 20 s with 8 processes a core."""


def started(stop: ExitStack, process: ServiceProcess) -> ServiceProcess:
    """``process`` started and healthy, stopped when ``stop`` closes (also if it never got healthy)."""
    stop.callback(process.stop)
    return process.start(timeout_s=START_TIMEOUT_S)


def started_sim(workdir: Path) -> ServiceProcess:
    """The simulator with this bench's latencies, healthy (the caller stops it)."""
    sim = ServiceProcess("llmsim", sim_env(), port_var="TT_LLMSIM_PORT", log_dir=workdir / "logs")
    return sim.start(timeout_s=START_TIMEOUT_S)


@contextmanager
def stack(redis_url: str, workdir: Path, shape: Shape) -> Iterator[tuple[ServiceProcess, ...]]:
    """The simulator, an idle runner and a gateway, stopped in reverse on the way out."""
    logs = workdir / "logs"
    with ExitStack() as stop:
        sim = started(stop, ServiceProcess("llmsim", sim_env(), port_var="TT_LLMSIM_PORT", log_dir=logs))
        common = {
            "REDIS_URL": redis_url,
            "TT_MODELS": str(models_file(workdir, sim.url)),
            "TT_LOG_LEVEL": "WARNING",
        }
        concurrency = max(shape.runs, 1)
        runner_env = {**common, "TT_RUNNER_CONCURRENCY": str(concurrency), "TT_RUNNER_ID": "bench-llm"}
        if (shape.pipeline or pipeline()) == "calls":
            runner_env["TT_RUNNER_PIPELINE"] = "bench.calls_pipeline:build"
        runner = started(stop, ServiceProcess("runner", runner_env, log_dir=logs))
        gateway_env = {
            **common, "TT_STATE_DIR": str(workdir / "gateway"), "TT_GATEWAY_PROCESS_ID": GATEWAY_ID,
            "TT_MAX_ACTIVE_RUNS": "0", "TT_SUBMIT_RATE": "0/min",
            "TT_PROJECTOR_URL": "http://127.0.0.1:9", "TT_PROJECTOR_TIMEOUT_S": "0.2",
        }  # fmt: skip
        if shape.gateway_workers:
            gateway_env["TT_GATEWAY_WORKERS"] = str(shape.gateway_workers)
        gateway = started(stop, ServiceProcess("gateway", gateway_env, log_dir=logs))
        yield sim, runner, gateway


async def submit_all(store: EventStore, n: int) -> list[str]:
    runs = []
    for _ in range(n):
        run_id = new_run_id()
        request = RunRequested(run_id=run_id, user_id=USER, symbol="ACME", model_id="sim", analysts=ANALYSTS)
        assert isinstance(await store.submit(request), Submitted)
        runs.append(run_id)
    return runs


def split(paths: list[str]) -> list[list[str]]:
    procs = max(1, min(MAX_WATCHER_PROCS, math.ceil(len(paths) / WATCHERS_PER_PROC)))
    return [paths[k::procs] for k in range(procs)] if paths else []


async def open_watchers(port: int, paths: list[str], workdir: Path) -> list[asyncio.subprocess.Process]:
    procs = []
    for k, share in enumerate(split(paths)):
        listing = workdir / f"watch-{k}.txt"
        listing.write_text("\n".join(share))
        procs.append(await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.watchers", str(port), str(listing), cwd=ROOT,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, limit=256 * 1024 * 1024,
        ))  # fmt: skip
    for proc in procs:
        assert proc.stdout is not None
        assert (await asyncio.wait_for(proc.stdout.readline(), 120)).strip() == b"opened"
    return procs


async def collect_watchers(procs: list[asyncio.subprocess.Process], out: Outcome) -> None:
    """Each process's report, once the last frames had a moment to arrive (a run that never
    ended must not keep its watchers waiting)."""
    await asyncio.sleep(2.0)
    for proc in procs:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
    for proc in procs:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 120)
        await proc.wait()
        if not line:
            continue
        doc = json.loads(line)
        out.latencies_ms += doc["latencies_ms"]
        out.watchers_ended += doc["ended"]
        out.loadgen_cpu_s.append(doc["cpu_s"])


async def wait_ended(redis: Redis, keys: Keys, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while await redis.scard(keys.active(USER)) and time.monotonic() < deadline:
        await asyncio.sleep(0.25)


async def sample(runner: int, gateway: int, store: EventStore, out: Outcome, stop: asyncio.Event) -> None:
    """Peak RSS of runner and gateway, and the gateway's Redis connections, until ``stop``."""
    ticks = 0
    while not stop.is_set():
        out.runner_rss_peak_mb = max(out.runner_rss_peak_mb, rss_mb(runner))
        out.gateway_rss_peak_mb = max(out.gateway_rss_peak_mb, rss_mb(gateway))
        if ticks % 8 == 0:
            out.gateway_connections.append(await gateway_connections(store, GATEWAY_ID))
        ticks += 1
        try:
            await asyncio.wait_for(stop.wait(), 0.25)
        except TimeoutError:
            pass


async def tally(store: EventStore, runs: list[str], out: Outcome) -> None:
    """Completed runs, takeovers, and each run's time from its (last) start to its end."""
    for run_id in runs:
        entries = await store.read(run_id)
        starts = [i for i, e in entries if isinstance(e, RunStarted)]
        out.takeovers += sum(1 for _, e in entries if isinstance(e, RunStarted) and e.attempt > 1)
        ended = next((i for i, e in entries if is_terminal(e)), None)
        if any(isinstance(e, RunCompleted) for _, e in entries) and starts and ended:
            out.completed += 1
            out.run_s.append((streamids.millis(ended) - streamids.millis(starts[-1])) / 1000)


async def measure(redis_url: str, workdir: Path, shape: Shape) -> Outcome:
    """Run the workload of ``shape`` once on fresh processes and a flushed database."""
    out = Outcome(runs=shape.runs)
    redis = connect(redis_url)
    keys = Keys("tt:")
    store = EventStore(redis, keys)
    try:
        await redis.flushdb()
        with stack(redis_url, workdir, shape) as (sim, runner, gateway):
            await _drive(store, keys, shape, out, workdir, (sim, runner, gateway))
    finally:
        await redis.aclose()
    return out


async def _drive(
    store: EventStore,
    keys: Keys,
    shape: Shape,
    out: Outcome,
    workdir: Path,
    procs: tuple[ServiceProcess, ...],
) -> None:
    sim, runner, gateway = procs
    runner_pid, gateway_pid = _pid(runner), _pid(gateway)
    await asyncio.sleep(0.5)
    out.runner_rss_idle_mb, cpu0 = rss_mb(runner_pid), cpu_seconds(runner_pid)
    sim_cpu0 = cpu_seconds(_pid(sim))
    gateway_cpu0 = cpu_seconds(gateway_pid)
    out.gateway_rss_before_mb = rss_mb(gateway_pid)
    out.gateway_connections.append(await gateway_connections(store, GATEWAY_ID))
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample(runner_pid, gateway_pid, store, out, stop))
    began, redis_cpu = time.monotonic(), await _redis_cpu(store.redis)
    await store.redis.config_resetstat()
    try:
        runs = await submit_all(store, shape.runs)
        paths = shape.paths(runs)
        out.watchers = len(paths)
        watchers = await open_watchers(gateway.port, paths, workdir)
        await wait_ended(store.redis, keys, timeout_s=WAIT_BASE_S + shape.runs * WAIT_PER_RUN_S)
        out.wall_s = time.monotonic() - began
        out.runner_cpu_s = cpu_seconds(runner_pid) - cpu0
        out.sim_cpu_s = cpu_seconds(_pid(sim)) - sim_cpu0
        out.gateway_cpu_s = cpu_seconds(gateway_pid) - gateway_cpu0
        out.redis_cpu_s = await _redis_cpu(store.redis) - redis_cpu
        stats = await store.redis.info("commandstats")
        out.redis_calls = sum(int(v["calls"]) for v in stats.values())
        ranked = sorted(stats.items(), key=lambda kv: -float(kv[1]["usec"]))
        out.redis_top = [
            (k.removeprefix("cmdstat_"), int(v["calls"]), float(v["usec"])) for k, v in ranked[:4]
        ]
        await collect_watchers(watchers, out)
    finally:
        stop.set()
        await sampler
    await tally(store, runs, out)
    async with httpx.AsyncClient() as http:
        stats = (await http.get(f"{sim.url}/stats")).json()
    out.simulated_s, out.sim_statuses = stats["simulated_s"], stats["statuses"]


async def _redis_cpu(redis: Redis) -> float:
    info = await redis.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def _pid(process: ServiceProcess) -> int:
    assert process.process is not None
    return process.process.pid
