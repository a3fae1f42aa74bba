"""Profiles of the hot paths the table exposes, with pyinstrument, on real processes.

    .venv/bin/python -m bench.profile gateway [SECONDS]   # POST /runs under the submit load
    .venv/bin/python -m bench.profile runner [N]          # one runner draining N no-op runs
    .venv/bin/python -m bench.profile sse [ROUNDS]        # the gateway fanning out to 1,000 SSE clients
    .venv/bin/python -m bench.profile llm [N] [SECONDS]   # one runner with N LLM-bound runs in flight
                                                          # (BENCH_LLM_PIPELINE: trading, default, or calls)

The service runs as ``python -m pyinstrument -m services.<name>``; SIGINT ends it (uvicorn and
the runner both stop cleanly on it) and pyinstrument writes its report to bench/results/.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import llm_workload, noop_e2e, sse_fanout, submit_bench
from bench.common import ROOT, Child, python_env
from shared.keys import Keys
from shared.redis_io import connect
from shared.redis_server import RedisServer, free_port
from shared.store import EventStore

OUT = ROOT / "bench" / "results"


def profiled(service: str, env: dict[str, str], report: Path, log: Path) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "pyinstrument", "--renderer", "session", "-o", str(report),
            "-m", f"services.{service}"]  # fmt: skip
    with log.open("ab") as out:
        return subprocess.Popen(argv, env=python_env(env), cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)


def finish(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def gateway(redis_url: str, workdir: Path, seconds: float) -> Path:
    port = free_port()
    env = {**submit_bench.gateway_env(redis_url, workdir), "TT_GATEWAY_PORT": str(port)}
    report = OUT / "profile-gateway.pyisession"
    proc = profiled("gateway", env, report, workdir / "gateway.log")
    try:
        Child("bench.submit_bench", [], workdir / "x.log").wait_http(f"http://127.0.0.1:{port}/healthz", 60.0)
        print(submit_bench.one_load(f"http://127.0.0.1:{port}", seconds, 32))
    finally:
        finish(proc)
    return report


async def _submit(redis_url: str, keys: Keys, n: int) -> None:
    redis = connect(redis_url)
    store = EventStore(redis, keys)
    for _ in range(n):
        await store.submit(noop_e2e.request(0))
    await redis.aclose()


async def _drained(redis_url: str, keys: Keys, n: int) -> None:
    redis = connect(redis_url)
    while len(await redis.keys(f"{keys.prefix}run:*")) < n or await _pending(redis, keys):
        await asyncio.sleep(0.1)
    await redis.aclose()


async def _pending(redis: object, keys: Keys) -> int:
    groups = await redis.xinfo_groups(keys.queue)  # type: ignore[attr-defined]
    return sum(int(g["pending"]) + int(g.get("lag") or 0) for g in groups) if groups else 1


def runner(redis_url: str, workdir: Path, n: int) -> Path:
    keys = Keys("prof:")
    asyncio.run(_submit(redis_url, keys, n))
    env = {**noop_e2e.base_env(redis_url, keys.prefix, workdir), "TT_RUNNER_PORT": str(free_port())}
    report = OUT / "profile-runner.pyisession"
    began = time.perf_counter()
    proc = profiled("runner", env, report, workdir / "runner.log")
    try:
        asyncio.run(_drained(redis_url, keys, n))
        print(f"{n} no-op runs drained in {time.perf_counter() - began:.1f} s (profiled, start-up included)")
    finally:
        finish(proc)
    return report


def llm(redis_url: str, workdir: Path, n: int, seconds: float) -> Path:
    """``n`` runs of ten simulated model calls in flight in a profiled runner: the trading
    pipeline, or the bare calls (``BENCH_LLM_PIPELINE=calls``)."""
    keys = Keys("tt:")
    sim = llm_workload.started_sim(workdir)
    env = {
        "REDIS_URL": redis_url, "TT_MODELS": str(llm_workload.models_file(workdir, sim.url)),
        "TT_LOG_LEVEL": "WARNING", "TT_RUNNER_CONCURRENCY": str(n), "TT_RUNNER_ID": "prof-llm",
        "TT_RUNNER_PORT": str(free_port()),
    }  # fmt: skip
    if llm_workload.pipeline() == "calls":
        env["TT_RUNNER_PIPELINE"] = "bench.calls_pipeline:build"
    report = OUT / "profile-llm.pyisession"
    proc = profiled("runner", env, report, workdir / "runner.log")
    try:
        asyncio.run(_llm_load(redis_url, keys, n, seconds))
    finally:
        finish(proc)
        sim.stop()
        (OUT / "profile-llm-runner.log").write_bytes((workdir / "runner.log").read_bytes())
    return report


async def _llm_load(redis_url: str, keys: Keys, n: int, seconds: float) -> None:
    redis = connect(redis_url)
    store = EventStore(redis, keys)
    try:
        began = time.perf_counter()
        await llm_workload.submit_all(store, n)
        deadline = time.monotonic() + seconds
        while await redis.scard(keys.active(llm_workload.USER)) and time.monotonic() < deadline:
            await asyncio.sleep(10)
            print(f"{time.perf_counter() - began:.0f} s: {await redis.xlen(keys.events)} events", flush=True)
        left = await redis.scard(keys.active(llm_workload.USER))
        print(f"{n - left} of {n} LLM-bound runs ended in {time.perf_counter() - began:.1f} s (profiled)")
    finally:
        await redis.aclose()


def sse(redis_url: str, workdir: Path, rounds: int) -> Path:
    """Rounds of ``bench.sse_fanout`` at 1,000 clients against a profiled gateway."""
    port = free_port()
    env = sse_fanout.gateway_env(redis_url, workdir, port)
    report = OUT / "profile-sse.pyisession"
    proc = profiled("gateway", env, report, workdir / "gateway.log")
    try:
        asyncio.run(_fan_out(f"http://127.0.0.1:{port}", port, redis_url, proc, rounds))
    finally:
        finish(proc)
    return report


async def _fan_out(url: str, port: int, redis_url: str, proc: subprocess.Popen[bytes], rounds: int) -> None:
    redis = connect(redis_url)
    store = EventStore(redis, Keys("tt:"))
    try:
        await sse_fanout.wait_healthy(url, proc)
        for _ in range(rounds):
            row = await sse_fanout.one_round(url, port, store, 1000)
            print(f"p50 {row['p50']:.1f} ms, p99 {row['p99']:.1f} ms (profiled)")
    finally:
        await redis.aclose()


def main(argv: list[str]) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tt-profile-") as tmp, RedisServer(Path(tmp) / "redis") as redis:
        if argv[0] == "gateway":
            report = gateway(redis.url, Path(tmp), float(argv[1]) if len(argv) > 1 else 10.0)
        elif argv[0] == "llm":
            n, seconds = int(argv[1]) if len(argv) > 1 else 1000, float(argv[2]) if len(argv) > 2 else 60.0
            report = llm(redis.url, Path(tmp), n, seconds)
        elif argv[0] == "sse":
            report = sse(redis.url, Path(tmp), int(argv[1]) if len(argv) > 1 else 5)
        else:
            report = runner(redis.url, Path(tmp), int(argv[1]) if len(argv) > 1 else 3000)
    render(report)


def render(session: Path) -> None:
    """A flat list (time spent in each function itself) and the call tree, as text files."""
    for name, options in (("flat", ["-p", "flat=true"]), ("tree", ["-p", "show_all=false"])):
        out = session.with_suffix(f".{name}.txt")
        subprocess.run(
            [sys.executable, "-m", "pyinstrument", "--load", str(session), "-r", "text", *options,
             "-o", str(out)],
            check=True, cwd=ROOT,
        )  # fmt: skip
        print(f"report: {out}")


if __name__ == "__main__":
    main(sys.argv[1:] or ["gateway"])
