"""Many concurrent runs on one runner: every run completes, none is taken over, no pool error.

The runner admits only the runs whose leases it can keep, its Redis pool makes a command wait for
a connection, and its claim loop never takes over a run it is itself executing. The fast test
squeezes that into seconds (a 1 s lease, 300 runs at once, each step 0.25 s); the big one is the
stated capacity: 1,000 runs of the real pipeline (offline model, 2 s per step) on one process.
"""

from __future__ import annotations

import asyncio
import logging
import re
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from redis.asyncio import Redis

from shared import streamids
from shared.events import RunCompleted, RunRequested, RunStarted, is_terminal
from shared.keys import Keys
from shared.redis_io import connect
from shared.results import Usage
from shared.store import EventStore
from tests.runner.support import CountingPipeline, report, running_worker, submit
from tests.support.pipelines import Attempt, PipelineDouble
from tests.support.processes import ServiceProcess

POOL_ERRORS = re.compile(r"Too many connections|No connection available|MaxConnectionsError")


@dataclass(frozen=True)
class Tally:
    completed: int
    takeovers: int
    median_s: float
    max_s: float

    def line(self, pool_errors: int) -> str:
        return (
            f"completed {self.completed}, takeovers {self.takeovers}, pool errors {pool_errors}, "
            f"run time median {self.median_s:.1f}s max {self.max_s:.1f}s"
        )


async def _wait_all_ended(redis: Redis, keys: Keys, timeout_s: float) -> None:
    """Until the user's active-run set is empty (each run leaves it with its terminal event)."""
    deadline = time.monotonic() + timeout_s
    while await redis.scard(keys.active("local")):
        assert time.monotonic() < deadline, f"{await redis.scard(keys.active('local'))} runs still active"
        await asyncio.sleep(0.5)


async def _tally(store: EventStore, runs: list[str]) -> Tally:
    """Completed runs, attempts beyond the first, and request-to-end time on Redis's clock."""
    completed = takeovers = 0
    times: list[float] = []
    for run_id in runs:
        entries = await store.read(run_id)
        takeovers += sum(1 for _, e in entries if isinstance(e, RunStarted) and e.attempt > 1)
        completed += any(isinstance(e, RunCompleted) for _, e in entries)
        asked = next(i for i, e in entries if isinstance(e, RunRequested))
        ended = next((i for i, e in entries if is_terminal(e)), None)
        if ended is not None:
            times.append((streamids.millis(ended) - streamids.millis(asked)) / 1000)
    return Tally(completed, takeovers, statistics.median(times), max(times))


async def test_a_runner_flooded_past_its_lease_keeps_every_run(
    redis_url: str, redis: Redis, keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    n = 300
    store = EventStore(redis, keys)
    runs = [await submit(store, analysts=()) for _ in range(n)]
    settings = {
        "TT_RUNNER_CONCURRENCY": str(n), "TT_LEASE_S": "1", "TT_CLAIM_INTERVAL_S": "0.1",
        "TT_RUNNER_REDIS_CONNECTIONS": "16",
    }  # fmt: skip
    counters = connect(
        redis_url, max_connections=32
    )  # the test pipeline's own counting waits for a connection
    try:
        with caplog.at_level(logging.WARNING):
            async with running_worker(redis_url, CountingPipeline(counters, step_s=0.25), **settings):
                await _wait_all_ended(redis, keys, timeout_s=25)
    finally:
        await counters.aclose()
    tally = await _tally(store, runs)
    pool_errors = sum(1 for r in caplog.records if POOL_ERRORS.search(_text(r)))
    left_pending = [r.getMessage() for r in caplog.records if "left pending" in r.getMessage()]
    report(tally.line(pool_errors))
    assert tally.completed == n and tally.takeovers == 0
    assert pool_errors == 0 and not left_pending, left_pending[:3]
    assert tally.max_s <= 3 * tally.median_s


def _text(record: logging.LogRecord) -> str:
    error = record.exc_info[1] if record.exc_info else None
    return f"{record.getMessage()} {type(error).__name__ if error else ''} {error or ''}"


@pytest.mark.timeout(600)
async def test_one_runner_process_completes_1000_concurrent_runs(
    redis_url: str, redis: Redis, keys: Keys, tmp_path: Path
) -> None:
    n = 1000
    store = EventStore(redis, keys)
    env = {
        "REDIS_URL": redis_url, "TT_RUNNER_CONCURRENCY": str(n), "TT_STEP_DELAY_S": "2",
        "TT_RUNNER_ID": "solo", "TT_LOG_LEVEL": "INFO",
    }  # fmt: skip
    with ServiceProcess("runner", env, log_dir=tmp_path) as runner:
        began = time.monotonic()
        runs = [await submit(store, analysts=("market",)) for _ in range(n)]
        await _wait_all_ended(redis, keys, timeout_s=900)
        wall = time.monotonic() - began
    tally = await _tally(store, runs)
    log = runner.log_path.read_text(errors="replace")
    pool_errors = len(POOL_ERRORS.findall(log))
    report(f"{n} runs in {wall:.0f}s: {tally.line(pool_errors)}")
    assert tally.completed == n and tally.takeovers == 0 and pool_errors == 0
    assert "took over" not in log
    assert tally.max_s <= 3 * tally.median_s


class ReportingPipeline(PipelineDouble):
    """Three steps of a few progress events each and nothing else (no Redis of its own)."""

    async def body(self, attempt: Attempt) -> None:
        for index, step in enumerate(("one", "two", "three")):
            await attempt.reporter.started(step, index)
            for part in (1, 2, 3):
                await asyncio.sleep(0.02)
                await attempt.reporter.progress(step, part / 4)
            await attempt.reporter.completed(step, None, 0.06, Usage())
        return None


async def test_the_runs_appends_share_round_trips_not_connections(
    redis_url: str, redis: Redis, keys: Keys
) -> None:
    """Appends of the runs in flight go to Redis together: the runner's connections stay a
    handful whatever the runs in flight (one EVALSHA a run took a pooled connection each, and
    at 1,000 in flight a run waited 30 s for one and failed)."""
    n = 300
    store = EventStore(redis, keys)
    runs = [await submit(store, analysts=("market",)) for _ in range(n)]
    before = await _clients(redis)
    pipeline = ReportingPipeline()
    async with running_worker(redis_url, pipeline, TT_RUNNER_CONCURRENCY=str(n)) as worker:
        await _wait_all_ended(redis, keys, timeout_s=60)
        opened = await _clients(redis) - before
        mean_batch = worker.scripts.calls / max(worker.scripts.flushes, 1)
    tally = await _tally(store, runs)
    report(f"{n} runs: runner connections {opened}, appends per round trip {mean_batch:.1f}")
    assert tally.completed == n
    assert opened <= 12


async def _clients(redis: Redis) -> int:
    return int((await redis.info("clients"))["connected_clients"])
