"""What a runner holds per run in flight, by where it was allocated (tracemalloc).

    .venv/bin/python -m bench.llm_memory [N] [FRAMES]   # N runs in flight (default 250), traceback depth

Row 7's workload (bench/llm_workload.py) on a runner in this process, the simulator and Redis
apart: a warm-up batch of 20 runs to its end (imports, caches, the shared market data), a
baseline snapshot, then N runs submitted at once and a snapshot 12 s later (every run past its
data step, in its analysts' calls). Prints the growth per run by our module (the innermost frame
in services/ or shared/) and by allocation site (that frame and the FRAMES innermost ones).
Python's allocations only: the allocator's slack after the burst is the rest of row 7's RSS.
Grouping the snapshots blocks the loop for a minute, so the runs are stopped unfinished after.
"""

from __future__ import annotations

import asyncio
import gc
import os
import sys
import tempfile
import tracemalloc
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

from bench import llm_workload
from bench.common import ROOT, rss_mb
from services.runner.settings import RunnerSettings
from services.runner.worker import Worker
from shared.config import Env
from shared.keys import Keys
from shared.redis_io import connect
from shared.redis_server import RedisServer
from shared.store import EventStore
from tests.support.processes import ServiceProcess

WARMUP = 20
MID_RUN_S = 12.0
"""After the burst's data steps and first calls, before the first runs end (~33 s a run)."""


async def _until_idle(redis_url: str) -> None:
    redis, keys = connect(redis_url), Keys("tt:")
    try:
        while await redis.scard(keys.active(llm_workload.USER)):
            await asyncio.sleep(0.5)
    finally:
        await redis.aclose()


async def _probe(redis_url: str, models: Path, n: int, frames: int) -> None:
    os.environ["TT_MODELS"] = str(models)
    env = {
        "REDIS_URL": redis_url, "TT_RUNNER_PORT": "0", "TT_LOG_LEVEL": "WARNING",
        "TT_RUNNER_CONCURRENCY": str(n), "TT_RUNNER_ID": "llm-memory", "TT_MODELS": str(models),
    }  # fmt: skip
    worker = Worker(RunnerSettings.from_env(Env(env)))
    task = asyncio.create_task(worker.run())
    redis = connect(redis_url)
    store = EventStore(redis, Keys("tt:"))
    try:
        await asyncio.wait_for(worker.ready.wait(), 30)
        await llm_workload.submit_all(store, WARMUP)
        await _until_idle(redis_url)
        await asyncio.sleep(1)
        gc.collect()
        rss0 = rss_mb(os.getpid())
        before = tracemalloc.take_snapshot()
        await llm_workload.submit_all(store, n)
        await asyncio.sleep(MID_RUN_S)
        gc.collect()
        rss1 = rss_mb(os.getpid())
        after = tracemalloc.take_snapshot()
        print(f"RSS growth {(rss1 - rss0) * 1024 / n:.1f} KB a run (tracemalloc's own traces included)")
        _report(before, after, n, frames)  # then stopped: the runs are handed back, unfinished
    finally:
        await redis.aclose()
        worker.request_stop()
        await asyncio.wait_for(task, 60)


def _report(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot, n: int, frames: int) -> None:
    grown = Counter(_grouped(after, frames))
    grown.subtract(_grouped(before, frames))
    print(f"runs in flight {n}: {grown.total() / n / 1024:.1f} KB of Python allocations a run")
    by_file: Counter[str] = Counter()
    for (ours, _), size in grown.items():
        by_file[ours.rsplit(":", 1)[0]] += size
    print("by our module (the innermost frame of ours):")
    for name, size in by_file.most_common(15):
        print(f"{size / n / 1024:7.2f} KB  {name}")
    print("by allocation site:")
    for (ours, inner), size in grown.most_common(30):
        if size / n < 200:
            break
        print(f"{size / n / 1024:7.2f} KB  {ours}  [{inner}]")


def _grouped(snapshot: tracemalloc.Snapshot, frames: int) -> Counter[tuple[str, str]]:
    """Bytes by (the innermost frame of our code, the innermost ``frames`` frames)."""
    out: Counter[tuple[str, str]] = Counter()
    for trace in snapshot.traces:
        stack = list(trace.traceback)[::-1]  # innermost first
        if stack and stack[0].filename == tracemalloc.__file__:
            continue
        ours = next((f"{_short(f.filename)}:{f.lineno}" for f in stack if _ours(f.filename)), "-")
        inner = " <- ".join(f"{_short(f.filename)}:{f.lineno}" for f in stack[:frames])
        out[ours, inner] += trace.size
    return out


def _ours(path: str) -> bool:
    return ("/services/" in path or "/shared/" in path) and "site-packages" not in path


def _short(path: str) -> str:
    for mark in ("site-packages/", f"{ROOT}/", "/python3.11/"):
        if mark in path:
            return path.split(mark, 1)[1]
    return path


def main(n: int, frames: int) -> None:
    with tempfile.TemporaryDirectory(prefix="tt-llm-mem-") as tmp, ExitStack() as stop:
        workdir = Path(tmp)
        redis = stop.enter_context(RedisServer(workdir / "redis"))
        simulator = ServiceProcess(
            "llmsim", llm_workload.sim_env(), port_var="TT_LLMSIM_PORT", log_dir=workdir
        )
        sim = llm_workload.started(stop, simulator)
        tracemalloc.start(20)
        asyncio.run(_probe(redis.url, llm_workload.models_file(workdir, sim.url), n, frames))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 250, int(sys.argv[2]) if len(sys.argv) > 2 else 6)
