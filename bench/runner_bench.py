"""Runner figures: no-op runs/s by one runner process, crashed-run resume time, cancel latency.

    .venv/bin/python -m bench.runner_bench            # prints a table
    BENCH_QUICK=1 .venv/bin/python -m bench.runner_bench
    .venv/bin/python -m bench.runner_bench compare REV [REPS] [N]   # row 2, REV's runner vs ours
    .venv/bin/python -m bench.runner_bench compare-warm REV [REPS] [N] [RUNNERS]   # row 6, CPU/run

Each figure comes from real runner processes (``python -m services.runner``) against a
redis-server of the bench's own (or ``REDIS_URL``). Building blocks return numbers so the
combined bench (``python -m bench``) can put them in its table.

- no-op throughput: N no-op runs are queued first, then one runner process drains them;
  runs/s = N / (first RunStarted → last RunCompleted), read from the global log's stream IDs
  (process start-up excluded).
- crash resume: the real pipeline (offline model, paced steps) runs on two runner processes;
  the one executing is killed with SIGKILL mid-step; figure = kill → RunStarted of the other
  (bounded by the lease), plus LLM calls repeated compared with a clean run (should be 0).
- cancel latency: runs parked mid-step on one runner, then cancelled one by one; the runner
  records RunCancelled → RunCancellationConfirmed in ``latency_ms``.
- compare: row 2 of ``python -m bench`` (N no-op runs queued, then one runner process spawned;
  clock until the projector's read model shows all N ended), alternating a git revision's runner
  (exported with ``git archive``) with the working tree's, in the same run, so before/after
  share the machine's load. The projector is the working tree's in both.
- compare-warm: row 6's warm no-op measurement (RUNNERS runner processes up, idle and done
  with their start-up — pipeline built per /healthz where the revision reports it, then their
  CPU flat for 0.5 s — then N runs submitted 50 at a time; clock and CPU until the read model
  shows all N ended), alternating REV's runner with the working tree's. The figure to develop
  against is runner CPU per run (process CPU time, not wall clock).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from redis.asyncio import Redis

from bench import noop_e2e
from bench.common import cpu_seconds, export
from shared.events import (
    AnyEvent,
    RunCancellationConfirmed,
    RunCancelled,
    RunOptions,
    RunRequested,
    RunStarted,
    StepCompleted,
    StepStarted,
)
from shared.ids import new_run_id
from shared.keys import Keys
from shared.redis_io import connect
from shared.redis_server import RedisServer
from shared.store import EventStore
from tests.support.processes import ServiceProcess

USER = "bench"
KEYS = Keys("tt:")

T = TypeVar("T")


def _quick() -> bool:
    return os.environ.get("BENCH_QUICK", "") not in ("", "0")


@dataclass(frozen=True, slots=True)
class Resume:
    resume_s: float
    """SIGKILL → RunStarted by the other runner."""
    finish_s: float
    """SIGKILL → RunCompleted."""
    repeated_calls: int
    lease_s: float


def _request(pipeline: str = "noop", analysts: tuple[str, ...] = ("market",)) -> RunRequested:
    return RunRequested(
        run_id=new_run_id(), user_id=USER, symbol="AAPL", model_id="offline", analysts=analysts,
        options=RunOptions(pipeline=pipeline),
    )  # fmt: skip


@contextmanager
def _runners(redis_url: str, log_dir: Path, count: int, **env: str) -> Iterator[list[ServiceProcess]]:
    base = {"REDIS_URL": redis_url, "TT_LOG_LEVEL": "WARNING", **env}
    procs = [
        ServiceProcess("runner", {**base, "TT_RUNNER_ID": f"bench-{i}"}, log_dir=log_dir)
        for i in range(count)
    ]
    try:
        for proc in procs:
            proc.start(wait=False)
        for proc in procs:
            proc.wait_healthy(60)
        yield procs
    finally:
        for proc in procs:
            proc.stop(timeout_s=15)


async def _events(store: EventStore, run_id: str) -> list[AnyEvent]:
    return [e for _, e in await store.read(run_id)]


async def _wait(store: EventStore, run_id: str, kind: type[AnyEvent], timeout_s: float = 60.0) -> AnyEvent:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for event in await _events(store, run_id):
            if isinstance(event, kind):
                return event
        await asyncio.sleep(0.01)
    raise TimeoutError(f"no {kind.__name__} in run {run_id} after {timeout_s}s")


# ------------------------------------------------------------------ no-op throughput


async def noop_rate(redis_url: str, log_dir: Path, concurrency: int, n: int) -> float:
    """Runs/s one runner process completes at ``concurrency`` (no-op runs, start-up excluded)."""
    redis = connect(redis_url)
    try:
        await redis.flushdb()
        store = EventStore(redis, KEYS)
        for _ in range(n):
            await store.submit(_request())
        with _runners(redis_url, log_dir, 1, TT_RUNNER_CONCURRENCY=str(concurrency)):
            await _drained(redis)
        return n / await _processing_span_s(redis)
    finally:
        await redis.aclose()


async def _drained(redis: Redis, timeout_s: float = 300.0) -> None:
    """Every queued entry delivered to the group and acked."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        groups: Any = await redis.xinfo_groups(KEYS.queue)
        info = next((g for g in groups if g["name"] in (b"runners", "runners")), None)
        newest: Any = await redis.xrevrange(KEYS.queue, count=1)
        if info is not None and int(info["pending"]) == 0 and newest:
            if _text(info["last-delivered-id"]) == _text(newest[0][0]):
                return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"queue not drained in {timeout_s}s")


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def _processing_span_s(redis: Redis) -> float:
    """First runner event → last event in the global log (stream IDs carry milliseconds)."""
    store = EventStore(redis, KEYS)
    first = last = None
    raw: Any = await redis.xrange(KEYS.events)
    for entry_id, fields in raw:
        event = store.decode_fields(entry_id.decode(), fields)
        if event is None or isinstance(event, RunRequested):
            continue
        ms = int(entry_id.decode().split("-")[0])
        first = ms if first is None else first
        last = ms
    if first is None or last is None:
        raise RuntimeError("no runner events in the log")
    return max(last - first, 1) / 1000


# ------------------------------------------------------------------ crash resume


async def crash_resume(redis_url: str, log_dir: Path, lease_s: float = 2.0) -> Resume:
    """SIGKILL the runner executing a real (offline) run mid-step; the other resumes it."""
    redis = connect(redis_url)
    env = {"TT_LEASE_S": str(lease_s), "TT_CLAIM_INTERVAL_S": "0.2", "TT_STEP_DELAY_S": "0.3"}
    analysts = ("market", "risk", "sentiment")
    try:
        await redis.flushdb()
        store = EventStore(redis, KEYS)
        with _runners(redis_url, log_dir, 2, **env) as procs:
            clean = await _completed_calls(store, analysts)
            request = _request("full", analysts)
            await store.submit(request)
            started = await _wait(store, request.run_id, RunStarted)
            await _wait_step(store, request.run_id, "analyst:market")
            victim = next(p for p in procs if p.env["TT_RUNNER_ID"] == getattr(started, "runner_id", ""))
            victim.kill()
            killed = time.monotonic()
            await _wait_resumed(store, request.run_id, victim.env["TT_RUNNER_ID"])
            resumed = time.monotonic() - killed
            state = await _terminal(store, request.run_id)
            finished = time.monotonic() - killed
        return Resume(resumed, finished, state.usage.calls - clean, lease_s)
    finally:
        await redis.aclose()


async def _completed_calls(store: EventStore, analysts: tuple[str, ...]) -> int:
    request = _request("full", analysts)
    await store.submit(request)
    return int((await _terminal(store, request.run_id)).usage.calls)


async def _terminal(store: EventStore, run_id: str, timeout_s: float = 120.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = await store.state(run_id)
        if state is not None and state.terminal:
            if state.status != "completed":
                raise RuntimeError(f"run {run_id} ended {state.status}: {state.error}")
            return state
        await asyncio.sleep(0.01)
    raise TimeoutError(f"run {run_id} not terminal after {timeout_s}s")


async def _wait_step(store: EventStore, run_id: str, step: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if any(isinstance(e, StepCompleted) and e.step == step for e in await _events(store, run_id)):
            return
        await asyncio.sleep(0.01)
    raise TimeoutError(f"step {step} of run {run_id} not completed")


async def _wait_resumed(store: EventStore, run_id: str, victim: str) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        events = await _events(store, run_id)
        if any(isinstance(e, RunStarted) and e.runner_id != victim for e in events):
            return
        await asyncio.sleep(0.005)
    raise TimeoutError(f"run {run_id} not resumed")


# ------------------------------------------------------------------ cancel latency


async def cancel_latencies(redis_url: str, log_dir: Path, n: int) -> list[float]:
    """Milliseconds from RunCancelled to RunCancellationConfirmed, for ``n`` runs mid-step."""
    redis = connect(redis_url)
    try:
        await redis.flushdb()
        store = EventStore(redis, KEYS)
        env = {"TT_RUNNER_CONCURRENCY": str(n), "TT_STEP_DELAY_S": "120"}
        with _runners(redis_url, log_dir, 1, **env):
            requests = [_request("full") for _ in range(n)]
            for request in requests:
                await store.submit(request)
            for request in requests:
                await _wait(store, request.run_id, StepStarted)
            for request in requests:
                await store.append(RunCancelled(run_id=request.run_id, user_id=USER))
                await asyncio.sleep(0.01)
            confirmed = [await _wait(store, r.run_id, RunCancellationConfirmed) for r in requests]
        return [float(getattr(c, "latency_ms", 0.0) or 0.0) for c in confirmed]
    finally:
        await redis.aclose()


# ------------------------------------------------------------------ before / after (row 2)


@dataclass(frozen=True, slots=True)
class Cold:
    """One cold repetition of row 2: spawn → all N in the read model."""

    e2e_rate: float
    proc_rate: float
    startup_s: float
    """Spawn → the runner's first event (imports, connections, first read)."""
    runner_cpu_ms: float
    """Runner CPU per run, start-up included."""


class TreeRunner(ServiceProcess):
    """``python -m services.runner`` run from ``root``: the working tree or an exported revision."""

    def __init__(self, root: Path, env: dict[str, str], log_dir: Path) -> None:
        super().__init__("runner", env, log_dir=log_dir)
        self.root = root

    def start(self, timeout_s: float = 20.0, wait: bool = True) -> ServiceProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "services.runner"], env=self.env, cwd=self.root,
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )  # fmt: skip
        if wait:
            self.wait_healthy(timeout_s)
        return self


async def cold_once(redis_url: str, workdir: Path, tag: str, n: int, root: Path) -> Cold:
    """Row 2 once, with the runner of ``root`` (the projector is always the working tree's)."""
    keys = Keys(f"cmp{tag}:")
    env = noop_e2e.base_env(redis_url, keys.prefix, workdir / f"cmp-{tag}")
    redis = connect(redis_url)
    projector = ServiceProcess("projector", env, log_dir=workdir / "logs").start(timeout_s=30.0)
    runner: TreeRunner | None = None
    try:
        await noop_e2e.submit_all(EventStore(redis, keys), n, 0)
        after = await noop_e2e.last_log_id(redis, keys)
        spawned, began = time.time(), time.perf_counter()
        runner = TreeRunner(root, env, workdir / "logs")
        runner.start(wait=False)
        await noop_e2e.wait_completed(projector.url, n)
        elapsed = time.perf_counter() - began
        assert runner.process is not None
        cpu = cpu_seconds(runner.process.pid)
        first: Any = await redis.xrange(keys.events, min=f"({after}", count=1)
        startup = int(_text(first[0][0]).split("-")[0]) / 1000 - spawned
        span = await noop_e2e.processing_span_s(redis, keys, after)
        return Cold(n / elapsed, (n - 1) / span, startup, 1000 * cpu / n)
    finally:
        if runner is not None:
            runner.stop()
        projector.stop()
        await _unlink_prefix(redis, keys.prefix)
        await redis.aclose()


@dataclass(frozen=True, slots=True)
class Warm:
    rate: float
    runner_cpu_ms: float
    """Runner CPU per run (all runner processes), from the first submit to the last run seen."""


def _settled(runners: Sequence[ServiceProcess], quiet_s: float = 0.5, timeout_s: float = 60.0) -> None:
    """Until the runners' CPU time has not moved for ``quiet_s`` (their start-up is over)."""
    pids = [r.process.pid for r in runners if r.process is not None]
    deadline, last, since = time.monotonic() + timeout_s, -1.0, time.monotonic()
    while time.monotonic() < deadline:
        now = sum(cpu_seconds(pid) for pid in pids)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return
        time.sleep(0.05)


async def warm_once(redis_url: str, workdir: Path, tag: str, n: int, root: Path, count: int) -> Warm:
    """Row 6 (no-op, warm) once, with ``count`` runners of ``root``."""
    keys = Keys(f"cmw{tag}:")
    env = noop_e2e.base_env(redis_url, keys.prefix, workdir / f"cmw-{tag}")
    redis = connect(redis_url)
    projector = ServiceProcess("projector", env, log_dir=workdir / "logs").start(timeout_s=30.0)
    runners = [TreeRunner(root, env, workdir / "logs") for _ in range(count)]
    try:
        for runner in runners:
            runner.start(timeout_s=60.0)
        for runner in runners:
            noop_e2e.wait_built(runner, 60.0)
        _settled(runners)
        pids = [r.process.pid for r in runners if r.process is not None]
        cpu0, began = sum(cpu_seconds(p) for p in pids), time.perf_counter()
        await noop_e2e.submit_burst(EventStore(redis, keys), n, 0)
        await noop_e2e.wait_completed(projector.url, n)
        elapsed = time.perf_counter() - began
        return Warm(n / elapsed, 1000 * (sum(cpu_seconds(p) for p in pids) - cpu0) / n)
    finally:
        for runner in runners:
            runner.stop()
        projector.stop()
        await _unlink_prefix(redis, keys.prefix)
        await redis.aclose()


async def compare_warm(ref: str, n_reps: int, n: int, count: int) -> None:
    """Alternate ``ref``'s runners and the working tree's, warm, ``n_reps`` times each."""
    load_before = os.getloadavg()
    results = await _alternate(
        ref, n_reps, lambda url, workdir, tag, root: warm_once(url, workdir, tag, n, root, count)
    )
    load_after = os.getloadavg()
    print(f"row 6 warm, N={n} no-op runs, {count} runner process(es), {n_reps} repetitions alternating; "
          "median [min .. max]")  # fmt: skip
    print(f"{'runner':<16}{'runner CPU ms/run':>24}{'submit → read model runs/s':>32}")
    for name, warm in results.items():
        print(f"{name[:15]:<16}{_spread([w.runner_cpu_ms for w in warm], '.3f'):>24}"
              f"{_spread([w.rate for w in warm], ',.0f'):>32}")  # fmt: skip
    print(f"load average (1/5/15 min) before {tuple(round(x, 2) for x in load_before)}, "
          f"after {tuple(round(x, 2) for x in load_after)}")  # fmt: skip


async def _unlink_prefix(redis: Redis, prefix: str) -> None:
    batch: list[Any] = []
    async for key in redis.scan_iter(match=f"{prefix}*", count=1000):
        batch.append(key)
    for start in range(0, len(batch), 1000):
        await redis.unlink(*batch[start : start + 1000])


async def compare(ref: str, n_reps: int, n: int) -> None:
    """Alternate ``ref``'s runner and the working tree's, ``n_reps`` times each; print both."""
    load_before = os.getloadavg()
    results = await _alternate(
        ref, n_reps, lambda url, workdir, tag, root: cold_once(url, workdir, tag, n, root)
    )
    load_after = os.getloadavg()
    print(f"row 2, N={n} no-op runs, one runner process, {n_reps} repetitions alternating; "
          "median [min .. max]")  # fmt: skip
    header = ("runner", "spawn → read model runs/s", "first → last runs/s", "start-up s", "runner CPU ms/run")
    print(f"{header[0]:<16}{header[1]:>30}{header[2]:>28}{header[3]:>24}{header[4]:>24}")
    for name, cold in results.items():
        print(f"{name[:15]:<16}{_spread([c.e2e_rate for c in cold], ',.0f'):>30}"
              f"{_spread([c.proc_rate for c in cold], ',.0f'):>28}"
              f"{_spread([c.startup_s for c in cold], '.2f'):>24}"
              f"{_spread([c.runner_cpu_ms for c in cold], '.2f'):>24}")  # fmt: skip
    print(f"load average (1/5/15 min) before {tuple(round(x, 2) for x in load_before)}, "
          f"after {tuple(round(x, 2) for x in load_after)}")  # fmt: skip


async def _alternate(
    ref: str, n_reps: int, once: Callable[[str, Path, str, Path], Awaitable[T]]
) -> dict[str, list[T]]:
    """``once(redis_url, workdir, tag, root)`` for ``ref``'s tree and the working tree in turn,
    ``n_reps`` times each, on one Redis of its own."""
    with tempfile.TemporaryDirectory(prefix="runner-cmp-") as tmp, RedisServer(Path(tmp) / "redis") as server:
        workdir = Path(tmp)
        variants = {ref: export(ref, workdir / "ref"), "working tree": Path(__file__).resolve().parents[1]}
        results: dict[str, list[T]] = {name: [] for name in variants}
        for rep in range(n_reps):
            for index, (name, root) in enumerate(variants.items()):
                results[name].append(await once(server.url, workdir, f"{rep}{index}", root))
    return results


def _spread(values: Sequence[float], fmt: str) -> str:
    return f"{statistics.median(values):{fmt}} [{min(values):{fmt}} .. {max(values):{fmt}}]"


# ------------------------------------------------------------------ table


def percentile(values: Sequence[float], p: float) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[max(1, min(99, round(p))) - 1]


async def measure(redis_url: str, workdir: Path) -> list[tuple[str, str, str]]:
    """(figure, value, note) rows."""
    n = 200 if _quick() else 2000
    rows: list[tuple[str, str, str]] = []
    for concurrency in (1, 50):
        rate = await noop_rate(redis_url, workdir, concurrency, n)
        rows.append((f"no-op runs/s, 1 process, concurrency {concurrency}", f"{rate:,.0f}", f"{n} runs"))
    resumes = [await crash_resume(redis_url, workdir) for _ in range(1 if _quick() else 3)]
    rows.append(
        (
            "crashed run resumed after SIGKILL (s)",
            f"{statistics.median(r.resume_s for r in resumes):.2f}",
            f"median of {len(resumes)}; lease {resumes[0].lease_s:g} s, renewed every lease/3",
        )
    )
    rows.append(
        (
            "crashed run finished after SIGKILL (s)",
            f"{statistics.median(r.finish_s for r in resumes):.2f}",
            "",
        )
    )
    rows.append(("LLM calls repeated after the kill", str(max(r.repeated_calls for r in resumes)), "max"))
    latencies = await cancel_latencies(redis_url, workdir, 10 if _quick() else 50)
    rows.append(
        ("cancel latency p50 (ms)", f"{percentile(latencies, 50):.1f}", f"{len(latencies)} runs mid-step")
    )
    rows.append(("cancel latency p99 (ms)", f"{percentile(latencies, 99):.1f}", "RunCancelled → confirmed"))
    return rows


def print_table(rows: Sequence[tuple[str, str, str]]) -> None:
    width = max(len(r[0]) for r in rows)
    print(f"{'figure':<{width}}  {'value':>10}  note")
    print(f"{'-' * width}  {'-' * 10}  {'-' * 30}")
    for figure, value, note in rows:
        print(f"{figure:<{width}}  {value:>10}  {note}")


def main() -> None:
    if sys.argv[1:2] == ["compare-warm"]:
        args = sys.argv[2:]
        numbers = [int(a) for a in args[1:4]] + [3, 1000, 1][len(args[1:4]) :]
        asyncio.run(compare_warm(args[0] if args else "HEAD", *numbers))
        return
    if sys.argv[1:2] == ["compare"]:
        args = sys.argv[2:]
        ref = args[0] if args else "HEAD"
        asyncio.run(
            compare(ref, int(args[1]) if len(args) > 1 else 3, int(args[2]) if len(args) > 2 else 1000)
        )
        return
    with tempfile.TemporaryDirectory(prefix="runner-bench-") as tmp:
        workdir = Path(tmp)
        if os.environ.get("REDIS_URL"):
            rows = asyncio.run(measure(os.environ["REDIS_URL"], workdir))
        else:
            with RedisServer(workdir / "redis") as server:
                rows = asyncio.run(measure(server.url, workdir))
    print_table(rows)


if __name__ == "__main__":
    main()
