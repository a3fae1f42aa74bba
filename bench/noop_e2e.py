"""Rows 2 and 6: runs end to end — submitted, executed by runner processes, terminal in the read model.

Measured like the peer harness measures a job queue, so the figures compare: per repetition,
queue N runs one by one with the event store's own ``submit`` (what the gateway calls; timed),
then spawn the runner process(es) and stop the clock when the projector's read model
(``GET /internal/counts``) shows all N completed. ``e2e_rate`` = N / (spawn → all visible);
``proc_rate`` = runs/s between the first runner event and the last terminal event (startup
excluded; read from the global log's stream IDs). The projector runs throughout, as in a real
deployment; each repetition gets its own key prefix and SQLite file.

With ``steps`` set, runners load ``bench.steps_pipeline`` (K empty steps) instead of the no-op
plan: that is row 6's cost per run against steps per run.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from redis.asyncio import Redis

from bench.common import cpu_seconds
from shared.events import RunOptions, RunRequested
from shared.ids import new_run_id
from shared.keys import Keys
from shared.redis_io import connect
from shared.store import EventStore
from tests.support.processes import ServiceProcess

USER = "bench"
DRAIN_TIMEOUT_S = 180.0
STALL_S = 20.0


@dataclass(frozen=True, slots=True)
class E2E:
    """One repetition."""

    n: int
    runners: int
    steps: int
    enq_rate: float
    e2e_rate: float
    proc_rate: float
    runner_cpu_s: float
    projector_cpu_s: float
    redis_cpu_s: float
    events: int
    completed: int

    @property
    def cpu_ms_per_run(self) -> float:
        """Runner + projector + Redis CPU per run (what a run costs the whole system)."""
        return 1000 * (self.runner_cpu_s + self.projector_cpu_s + self.redis_cpu_s) / self.n

    @property
    def runner_cpu_ms_per_run(self) -> float:
        return 1000 * self.runner_cpu_s / self.n


def base_env(redis_url: str, prefix: str, state_dir: Path) -> dict[str, str]:
    return {
        "REDIS_URL": redis_url,
        "TT_PREFIX": prefix,
        "TT_STATE_DIR": str(state_dir),
        "TT_SNAPSHOT_INTERVAL_S": "0",
        "TT_RETENTION_INTERVAL_S": "0",
    }


def request(steps: int) -> RunRequested:
    options = RunOptions(pipeline="full" if steps else "noop")
    return RunRequested(run_id=new_run_id(), user_id=USER, symbol="AAPL", model_id="offline",
                        analysts=("market",), options=options)  # fmt: skip


async def submit_all(store: EventStore, n: int, steps: int) -> float:
    """N runs queued one by one (no pipelining, like the peers' enqueue); returns runs/s."""
    began = time.perf_counter()
    for _ in range(n):
        await store.submit(request(steps))
    return n / (time.perf_counter() - began)


async def redis_cpu(redis: Redis) -> float:
    info = await redis.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def wait_completed(projector_url: str, n: int, timeout_s: float = DRAIN_TIMEOUT_S) -> int:
    """Polls the read model every 20 ms until N runs are terminal; returns how many completed.

    Gives up early when the read model has not moved for STALL_S (a projector that is not applying).
    """
    deadline = time.monotonic() + timeout_s
    last, moved = None, time.monotonic()
    async with httpx.AsyncClient(base_url=projector_url, timeout=5.0) as http:
        while True:
            counts = (await http.get("/internal/counts", params={"user_id": USER})).json()
            ended = sum(counts.get(s, 0) for s in ("completed", "failed", "timeout", "cancelled"))
            if ended >= n:
                return int(counts.get("completed", 0))
            now = time.monotonic()
            last, moved = counts, (now if counts != last else moved)
            if now > deadline or now - moved > STALL_S:
                raise TimeoutError(f"read model at {ended} of {n} runs ended, not moving: {counts}")
            await asyncio.sleep(0.02)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _ms(stream_id: object) -> int:
    return int(_text(stream_id).split("-")[0])


async def last_log_id(redis: Redis, keys: Keys) -> str:
    last = await redis.xrevrange(keys.events, count=1)
    return _text(last[0][0]) if last else "0-0"


async def processing_span_s(redis: Redis, keys: Keys, after: str) -> float:
    """Seconds from the first runner event (after the submits) to the last event of the log."""
    first = await redis.xrange(keys.events, min=f"({after}", count=1) or []
    last = await redis.xrevrange(keys.events, count=1) or []
    if not first or not last:
        return float("nan")
    return max((_ms(last[0][0]) - _ms(first[0][0])) / 1000, 0.001)


def start_runners(
    env: dict[str, str], count: int, steps: int, log_dir: Path, *, wait: bool = False
) -> list[ServiceProcess]:
    extra = {"TT_RUNNER_PIPELINE": "bench.steps_pipeline:build", "BENCH_STEPS": str(steps)} if steps else {}
    runners = [ServiceProcess("runner", {**env, **extra}, log_dir=log_dir) for _ in range(count)]
    for runner in runners:
        runner.start(wait=False)
    if wait:
        for runner in runners:
            runner.wait_healthy(60.0)
            wait_built(runner, 60.0)
    return runners


def wait_built(runner: ServiceProcess, timeout_s: float) -> None:
    """Until the runner's /healthz says its pipeline is built: a runner builds it on its first
    idle moment after /healthz answers (~0.4 s of CPU importing the analysis package and httpx),
    and that is start-up, which warm measurements exclude."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        health = httpx.get(f"{runner.url}/healthz", timeout=2.0).json()
        if health.get("pipeline", "built") == "built":  # no field: a revision before 1bf62b2
            return
        time.sleep(0.05)
    raise TimeoutError(f"runner {runner.url} has not built its pipeline in {timeout_s:.0f} s")


async def submit_burst(store: EventStore, n: int, steps: int, width: int = 50) -> float:
    """N runs queued ``width`` at a time (runners already waiting); returns runs/s."""
    began = time.perf_counter()
    for start in range(0, n, width):
        await asyncio.gather(*(store.submit(request(steps)) for _ in range(min(width, n - start))))
    return n / (time.perf_counter() - began)


class Cpu:
    """CPU seconds of the runners, the projector and Redis since ``mark()``."""

    def __init__(self, redis: Redis, runners: list[ServiceProcess], projector: ServiceProcess) -> None:
        self.redis, self.runners, self.projector = redis, runners, projector
        self.base = (0.0, 0.0, 0.0)

    async def now(self) -> tuple[float, float, float]:
        runner = sum(cpu_seconds(_pid(p)) for p in self.runners)
        return runner, cpu_seconds(_pid(self.projector)), await redis_cpu(self.redis)

    async def mark(self) -> None:
        self.base = await self.now()

    async def spent(self) -> tuple[float, float, float]:
        now = await self.now()
        return now[0] - self.base[0], now[1] - self.base[1], now[2] - self.base[2]


async def one(
    redis_url: str, workdir: Path, tag: str, n: int, runners: int = 1, steps: int = 0, *, warm: bool = False
) -> E2E:
    """One repetition with a fresh prefix and read model.

    Cold (row 2, like the peers): runs queued first, then runner processes spawned; clock from
    spawn. Warm (row 6): runner processes up and idle first, then runs submitted 50 at a time;
    clock from the first submit, CPU counted from then (start-up excluded).
    """
    keys = Keys(f"e2e{tag}:")
    env = base_env(redis_url, keys.prefix, workdir / f"e2e-{tag}")
    redis = connect(redis_url)
    procs: list[ServiceProcess] = []
    projector = ServiceProcess("projector", env, log_dir=workdir / "logs").start(timeout_s=30.0)
    try:
        store = EventStore(redis, keys)
        if warm:
            procs = start_runners(env, runners, steps, workdir / "logs", wait=True)
        cpu = Cpu(redis, procs, projector)
        await cpu.mark()
        after = await last_log_id(redis, keys)
        began = time.perf_counter()
        if warm:
            enq_rate = await submit_burst(store, n, steps)
        else:
            enq_rate = await submit_all(store, n, steps)
            after = await last_log_id(redis, keys)
            await cpu.mark()
            began = time.perf_counter()
            procs = cpu.runners = start_runners(env, runners, steps, workdir / "logs")
        completed = await wait_completed(projector.url, n)
        elapsed = time.perf_counter() - began
        runner_cpu, projector_cpu, redis_cpu_s = await cpu.spent()
        return E2E(
            n=n, runners=runners, steps=steps, enq_rate=enq_rate, e2e_rate=n / elapsed,
            proc_rate=(n - 1) / await processing_span_s(redis, keys, after), runner_cpu_s=runner_cpu,
            projector_cpu_s=projector_cpu, redis_cpu_s=redis_cpu_s,
            events=int(await redis.xlen(keys.events)), completed=completed,
        )  # fmt: skip
    finally:
        for proc in procs:
            proc.stop()
        projector.stop()
        await drop_keys(redis, keys)
        await redis.aclose()


def _pid(service: ServiceProcess) -> int:
    assert service.process is not None
    return service.process.pid


async def drop_keys(redis: Redis, keys: Keys) -> None:
    """Frees the repetition's keys so the next one starts from the same Redis footprint."""
    batch: list[bytes] = []
    async for key in redis.scan_iter(match=f"{keys.prefix}*", count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            await redis.unlink(*batch)
            batch = []
    if batch:
        await redis.unlink(*batch)


async def repeat(
    redis_url: str, workdir: Path, label: str, n: int, n_reps: int, runners: int = 1, steps: int = 0,
    *, warm: bool = False,
) -> list[E2E]:  # fmt: skip
    return [await one(redis_url, workdir, f"{label}{i}", n, runners, steps, warm=warm) for i in range(n_reps)]
