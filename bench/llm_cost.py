"""What one LLM-bound run costs the runner alone: CPU and RSS per run, and the simulator's CPU.

    .venv/bin/python -m bench.llm_cost [N]     # N runs of row 7's workload in flight (default 100)

Row 7's workload (bench/llm_workload.py: the trading pipeline, five analysts, against the
simulator) on one runner with ``TT_RUNNER_CONCURRENCY`` = N, but no gateway and no watchers: the
figure to compare before and after a change to the runner, with less else on the cores. Prints
one JSON line; the simulator's CPU is the load's, measured apart from the runner's.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx

from bench import llm_workload
from bench.common import cpu_seconds, rss_mb
from shared.keys import Keys
from shared.redis_io import connect
from shared.redis_server import RedisServer
from shared.store import EventStore
from tests.support.processes import ServiceProcess


async def _drive(redis_url: str, runner: ServiceProcess, sim: ServiceProcess, n: int) -> dict[str, Any]:
    assert runner.process is not None and sim.process is not None
    runner_pid, sim_pid = runner.process.pid, sim.process.pid
    redis, keys = connect(redis_url), Keys("tt:")
    await asyncio.sleep(0.5)
    idle_mb, cpu0, sim0 = rss_mb(runner_pid), cpu_seconds(runner_pid), cpu_seconds(sim_pid)
    peak_mb, began = idle_mb, time.monotonic()
    try:
        await llm_workload.submit_all(EventStore(redis, keys), n)
        while await redis.scard(keys.active(llm_workload.USER)):
            peak_mb = max(peak_mb, rss_mb(runner_pid))
            await asyncio.sleep(0.25)
    finally:
        await redis.aclose()
    async with httpx.AsyncClient() as http:
        stats = (await http.get(f"{sim.url}/stats")).json()
    return {
        "runs": n,
        "wall_s": round(time.monotonic() - began, 1),
        "runner_cpu_ms_per_run": round((cpu_seconds(runner_pid) - cpu0) * 1000 / n, 1),
        "runner_rss_kb_per_run": round((peak_mb - idle_mb) * 1024 / n, 1),
        "runner_rss_idle_mb": round(idle_mb, 1),
        "sim_cpu_ms_per_run": round((cpu_seconds(sim_pid) - sim0) * 1000 / n, 1),
        "model_calls_per_run": sum(stats["statuses"].values()) / n,
        "model_s_per_run": round(stats["simulated_s"] / n, 2),
    }


def measure(n: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="tt-llm-cost-") as tmp, ExitStack() as stop:
        workdir = Path(tmp)
        redis = stop.enter_context(RedisServer(workdir / "redis"))
        logs = workdir / "logs"
        simulator = ServiceProcess("llmsim", llm_workload.sim_env(), port_var="TT_LLMSIM_PORT", log_dir=logs)
        sim = llm_workload.started(stop, simulator)
        env = {
            "REDIS_URL": redis.url, "TT_MODELS": str(llm_workload.models_file(workdir, sim.url)),
            "TT_LOG_LEVEL": "WARNING", "TT_RUNNER_CONCURRENCY": str(n), "TT_RUNNER_ID": "llm-cost",
        }  # fmt: skip
        runner = llm_workload.started(stop, ServiceProcess("runner", env, log_dir=logs))
        return asyncio.run(_drive(redis.url, runner, sim, n))


if __name__ == "__main__":
    print(json.dumps(measure(int(sys.argv[1]) if len(sys.argv) > 1 else 100)))
