"""Fault 10: runners whose wall clock is an hour (or a month) ahead of or behind the others.

Leases are Redis idle times (XCLAIM/XAUTOCLAIM min-idle), stream IDs come from the Redis
server's clock, and the reducer orders by stream position, never by ``at``: a skewed process
changes neither who holds a run nor the order of its events. Where a component compares an
event's ``at`` (written by another process's clock) with its own clock, skew would leak in: the
run deadline and retention therefore measure time on Redis's clock (stream IDs, TIME), and the
tests below prove it.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from shared.events import RunStarted, StepCompleted
from tests.chaos.harness import Cluster, record
from tests.runner.support import submit
from tests.support.processes import ROOT

HOUR = 3600.0
SKEW_PATH = f"{ROOT / 'tests' / 'chaos' / 'skewed_clock'}:{ROOT}"


def skewed(seconds: float) -> dict[str, str]:
    return {"TT_TEST_CLOCK_SKEW_S": str(seconds), "PYTHONPATH": SKEW_PATH}


@pytest.fixture
async def cluster(redis_url: str, tmp_path: Path) -> AsyncIterator[Cluster]:
    made = Cluster(redis_url, tmp_path, step_delay_s=0.6)
    try:
        yield made
    finally:
        await made.stop()


async def _takeover(cluster: Cluster, victim: str, survivor: str, runs: int = 4) -> tuple[list[str], float]:
    """The victim starts the runs (it alone is up), the survivor joins, the victim is SIGKILLed
    mid-run. Returns the run ids and how long after the kill the survivor restarted one."""
    await cluster.start(cluster.projector, cluster.runners[victim])
    run_ids = [await submit(cluster.store, analysts=("market", "risk", "news")) for _ in range(runs)]
    deadline = time.monotonic() + 30
    while not (held := await cluster.runs_started_by(victim, run_ids)):
        assert time.monotonic() < deadline, "the victim never started a run"
        await asyncio.sleep(0.05)
    await cluster.start(cluster.runners[survivor])
    held = await cluster.runs_started_by(victim, run_ids)
    assert held, "the runs ended before the survivor was up: make the steps longer"
    cluster.runners[victim].kill()
    killed = time.monotonic()
    run_id = next(iter(held))
    while True:
        starts = [e for _, e in await cluster.events(run_id) if isinstance(e, RunStarted)]
        if starts[-1].runner_id == survivor:
            return run_ids, time.monotonic() - killed
        assert time.monotonic() - killed < 20, "the survivor never took the run over"
        await asyncio.sleep(0.05)


async def test_leases_and_order_hold_when_the_runner_ahead_dies(cluster: Cluster) -> None:
    """A runner an hour ahead is SIGKILLed; one an hour behind takes its run over after the
    lease (2 s, measured on Redis's clock: not at once because its clock says the lease is long
    gone, not never), every run completes exactly once, the event order is the stream order
    whatever the ``at`` stamps say, and the read model equals the fold."""
    cluster.runner("ahead", **skewed(HOUR))
    cluster.runner("behind", **skewed(-HOUR))
    run_ids, takeover_s = await _takeover(cluster, victim="ahead", survivor="behind")
    states = await cluster.wait_terminal(run_ids)
    assert await cluster.assert_exactly_once(run_ids) == {"completed": len(run_ids)}, states
    assert 2.0 * 2 / 3 - 0.2 < takeover_s < 6, takeover_s  # lease minus one renew interval, at least
    stamps_out_of_order = 0
    for run_id in run_ids:
        events = [e for _, e in await cluster.events(run_id)]
        stamps_out_of_order += any(a.at > b.at for a, b in itertools.pairwise(events))
        steps = [e.step for e in events if isinstance(e, StepCompleted)]
        assert steps == list(states[run_id].steps[i].name for i in range(len(steps)))
    assert stamps_out_of_order >= 1, "no run mixed both clocks: the test did not exercise skew"
    await cluster.assert_read_model_is_the_fold(run_ids)
    figures = {"skew_s": [HOUR, -HOUR], "lease_s": 2.0, "takeover_s": round(takeover_s, 2)}
    record("clock_skew_takeover", {**figures, "runs_with_at_out_of_stream_order": stamps_out_of_order})


async def test_a_run_resumed_by_a_runner_ahead_is_not_timed_out_by_the_skew(cluster: Cluster) -> None:
    """The runner an hour behind dies; the one an hour ahead resumes its run: it completes."""
    cluster.runner("behind", **skewed(-HOUR))
    cluster.runner("ahead", **skewed(HOUR))
    run_ids, _ = await _takeover(cluster, victim="behind", survivor="ahead", runs=1)
    states = await cluster.wait_terminal(run_ids)
    assert {s.status for s in states.values()} == {"completed"}, {s.status for s in states.values()}


async def test_retention_does_not_archive_a_fresh_run_finished_by_a_runner_a_month_behind(
    redis_url: str, tmp_path: Path
) -> None:
    """A run completed by a runner 31 days behind stays in history and keeps its stream through
    retention passes (history 30 days, stream TTL 48 h)."""
    cluster = Cluster(redis_url, tmp_path, step_delay_s=0.0, TT_RETENTION_INTERVAL_S="0.5")
    cluster.runner("behind", **skewed(-31 * 24 * HOUR))
    try:
        await cluster.start(cluster.projector, cluster.runners["behind"])
        run_id = await submit(cluster.store, analysts=("market",))
        await cluster.wait_terminal([run_id])
        await asyncio.sleep(2.0)  # the projector applies it, then a few retention passes
        async with httpx.AsyncClient(base_url=cluster.projector.url, timeout=5) as http:
            listed = (await http.get("/internal/runs", params={"user_id": "local"})).json()["runs"]
        assert [r["run_id"] for r in listed] == [run_id], "archived out of history"
        assert await cluster.redis.exists(cluster.keys.run(run_id)), "stream unlinked"
    finally:
        await cluster.stop()
