"""Faults 1 and 2: runners SIGKILLed under load, and SIGTERMed (scale-down) during runs."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shared.events import RunRetrying, RunStarted
from shared.keys import RUNNERS_GROUP
from tests.chaos.harness import Cluster, record
from tests.runner.support import submit
from tests.support.processes import ServiceProcess

STEP_DELAY_S = 0.25


@pytest.fixture
async def cluster(redis_url: str, tmp_path: Path) -> AsyncIterator[Cluster]:
    made = Cluster(redis_url, tmp_path, step_delay_s=STEP_DELAY_S)
    try:
        yield made
    finally:
        await made.stop()


async def _until(predicate: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not await predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def test_sigkill_of_a_runner_under_load_loses_and_doubles_nothing(cluster: Cluster) -> None:
    """20 runs in flight on 3 runners, one SIGKILLed mid-run: every run ends in exactly one
    terminal state, no step is completed twice, no entry stays pending, and the read model equals
    the fold of each run stream. Measures the recovery time (kill → a survivor restarts the run)."""
    # Eight slots each: the two others hold at most 16 of the 20 runs, so the victim holds some.
    runners = [cluster.runner(f"r{i}", TT_RUNNER_CONCURRENCY="8") for i in range(3)]
    await cluster.start(cluster.projector, *runners)
    run_ids = [await submit(cluster.store) for _ in range(20)]

    async def victim_busy() -> bool:
        return len(await cluster.runs_started_by("r0", run_ids)) >= 2

    await _until(victim_busy, 30, "r0 to hold two runs")
    held = await cluster.runs_started_by("r0", run_ids)
    runners[0].kill()
    killed = time.monotonic()
    recovered: dict[str, float] = {}
    while len(recovered) < len(held) and time.monotonic() - killed < 30:
        for run_id in held - set(recovered):
            starts = [e for _, e in await cluster.events(run_id) if isinstance(e, RunStarted)]
            if starts[-1].runner_id != "r0":
                recovered[run_id] = time.monotonic() - killed
        await asyncio.sleep(0.05)

    await cluster.wait_terminal(run_ids)
    statuses = await cluster.assert_exactly_once(run_ids)
    assert statuses == {"completed": 20}, statuses
    assert set(recovered) == held, "a killed runner's run was never taken over"
    await cluster.assert_queues_drained()
    await cluster.assert_read_model_is_the_fold(run_ids)
    record(
        "runner_sigkill",
        {
            "runs": 20, "runners": 3, "lease_s": 2.0, "claim_interval_s": 0.2,
            "runs_held_by_victim": len(held),
            "recovery_s_max": round(max(recovered.values()), 2),
            "recovery_s_min": round(min(recovered.values()), 2),
        },
    )  # fmt: skip


async def test_sigterm_drains_or_releases_within_the_grace_period(cluster: Cluster) -> None:
    """Scale-down: one runner with a long grace drains (its runs finish on it), one with a short
    grace releases (another resumes them); both exit 0 within grace + margin, and neither is left
    owning a pending entry."""
    # Four slots each: eight runs cannot all land on whichever runner reads the queue first.
    draining = cluster.runner("drain", TT_SHUTDOWN_GRACE_S="30", TT_RUNNER_CONCURRENCY="4")
    releasing = cluster.runner("release", TT_SHUTDOWN_GRACE_S="0.3", TT_RUNNER_CONCURRENCY="4")
    survivor = cluster.runner("survivor")
    await cluster.start(cluster.projector, draining, releasing)
    run_ids = [await submit(cluster.store) for _ in range(8)]

    async def both_busy() -> bool:
        return all([await cluster.runs_started_by(n, run_ids) for n in ("drain", "release")])

    await _until(both_busy, 30, "both runners to hold runs")
    drained = await cluster.runs_started_by("drain", run_ids)
    released = await cluster.runs_started_by("release", run_ids)
    exits: dict[str, tuple[int | None, float]] = {}
    began = time.monotonic()

    async def exit_of(name: str, proc: ServiceProcess) -> None:
        assert proc.process is not None
        code = await asyncio.to_thread(proc.process.wait, 40)
        exits[name] = (code, time.monotonic() - began)

    for proc in (draining, releasing):
        proc.signal(signal.SIGTERM)
    waiting = [asyncio.create_task(exit_of(n, p)) for n, p in (("drain", draining), ("release", releasing))]
    await cluster.start(survivor)  # released entries wait, claimable, until someone is there
    await asyncio.gather(*waiting)

    assert exits["drain"][0] == 0 and exits["release"][0] == 0, exits
    assert exits["release"][1] < 0.3 + 5, exits  # grace + a bounded release, never the 30 s drain

    async def nothing_left_pending() -> bool:
        for queue in cluster.keys.queues:
            for name in ("drain", "release"):
                rows = await cluster.redis.xpending_range(
                    queue, RUNNERS_GROUP, "-", "+", 100, consumername=name
                )
                if rows:
                    return False
        return True

    await _until(nothing_left_pending, 15, "released entries to be taken over")
    await cluster.wait_terminal(run_ids)
    assert await cluster.assert_exactly_once(run_ids) == {"completed": 8}
    for run_id in drained:
        events = [e for _, e in await cluster.events(run_id)]
        assert not any(isinstance(e, RunRetrying) for e in events), "a draining runner released a run"
        assert [e.runner_id for e in events if isinstance(e, RunStarted)] == ["drain"]
    handed_over = 0
    for run_id in released:  # each either finished inside the grace or was released once
        events = [e for _, e in await cluster.events(run_id)]
        retrying = [e.reason for e in events if isinstance(e, RunRetrying)]
        starts = [e.runner_id for e in events if isinstance(e, RunStarted)]
        assert (retrying, starts) in ((["released"], ["release", "survivor"]), ([], ["release"])), run_id
        handed_over += bool(retrying)
    assert handed_over, "no run was released: the grace period did not cut anything short"
    await cluster.assert_queues_drained()
    record(
        "runner_sigterm",
        {"drain_exit_s": round(exits["drain"][1], 2), "release_exit_s": round(exits["release"][1], 2),
         "drained_runs": len(drained), "released_runs": handed_over},
    )  # fmt: skip
