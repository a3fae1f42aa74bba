"""Cancellation while queued, mid-step and after completion; the latency is printed."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import timedelta

import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from services.runner import runs
from shared.catalog import plan_steps
from shared.events import (
    RunCancellationConfirmed,
    RunCancelled,
    RunStarted,
    StepCompleted,
    StepStarted,
    utcnow,
)
from shared.keys import RUNNERS_GROUP, Keys
from shared.store import EventStore, RefusalReason, Refused
from tests.runner.support import (
    CountingPipeline,
    completed_key,
    counted_finished,
    events_of,
    report,
    running_worker,
    submit,
    wait_event,
    wait_state,
)
from tests.support.pipelines import Attempt, PipelineDouble

FINISHED, LATENCIES = "tickertape_runs_finished_total", "tickertape_cancel_latency_seconds_count"


def _sample(name: str, **labels: str) -> float:
    """A runner metric of this process (the workers here share the default registry)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_a_run_cancelled_while_queued_is_never_started(
    redis_url: str, redis: Redis, keys: Keys
) -> None:
    store = EventStore(redis, keys)
    run_id = await submit(store)
    await store.append(RunCancelled(run_id=run_id, user_id="local"))
    after = await submit(store)
    async with running_worker(redis_url, CountingPipeline(redis)):
        await wait_state(store, after)
    events = await events_of(store, run_id)
    assert not any(isinstance(e, RunStarted) for e in events)
    assert (await store.state(run_id)).status == "cancelled"  # type: ignore[union-attr]
    assert (await redis.xpending(keys.queue, RUNNERS_GROUP))["pending"] == 0


async def test_a_run_cancelled_mid_step_stops_within_half_a_second(
    redis_url: str, redis: Redis, keys: Keys
) -> None:
    store = EventStore(redis, keys)
    run_id = await submit(store, symbol="HANG")
    counted, timed = _sample(FINISHED, status="cancelled"), _sample(LATENCIES)
    async with running_worker(redis_url, CountingPipeline(redis)) as worker:
        await wait_event(store, run_id, lambda e: isinstance(e, StepStarted))
        asked = time.monotonic()
        await store.append(RunCancelled(run_id=run_id, user_id="local", reason="changed my mind"))
        state = await wait_state(store, run_id, timeout_s=5)
        seen = time.monotonic() - asked
        await counted_finished(worker, Counter(cancelled=1))
    confirmed = [e for e in await events_of(store, run_id) if isinstance(e, RunCancellationConfirmed)]
    assert state.status == "cancelled" and len(confirmed) == 1
    # The confirmation names who stopped it and why (the user's reason), and is counted once.
    assert (confirmed[0].runner_id, confirmed[0].reason) == (worker.settings.runner_id, "changed my mind")
    assert _sample(FINISHED, status="cancelled") == counted + 1 and _sample(LATENCIES) == timed + 1
    latency_ms = confirmed[0].latency_ms
    report(f"cancel latency mid-step: {latency_ms} ms by the runner, {seen * 1000:.0f} ms seen by the test")
    assert latency_ms is not None and 0 <= latency_ms < 500
    assert not await redis.get(completed_key(run_id, "data_collection"))
    assert (await redis.xpending(keys.queue, RUNNERS_GROUP))["pending"] == 0
    assert not await redis.sismember(keys.active("local"), run_id)


@pytest.mark.parametrize("seconds", [0.23456, -0.5])
async def test_the_cancel_latency_is_recorded_in_milliseconds_and_seconds(
    redis_url: str, redis: Redis, keys: Keys, monkeypatch: pytest.MonkeyPatch, seconds: float
) -> None:
    """From the RunCancelled's time to the runner's confirmation: in the event, milliseconds to
    one decimal; in the histogram, seconds, never below 0 (a runner's clock behind the gateway's).
    The runner's clock is set to read ``seconds`` after the cancel, so the figures are exact."""
    store = EventStore(redis, keys)
    run_id = await submit(store, symbol="HANG")
    cancelled_at = utcnow()
    monkeypatch.setattr(runs, "utcnow", lambda: cancelled_at + timedelta(seconds=seconds))
    summed, timed = _sample(LATENCIES.replace("_count", "_sum")), _sample(LATENCIES)
    async with running_worker(redis_url, CountingPipeline(redis)):
        await wait_event(store, run_id, lambda e: isinstance(e, StepStarted))
        await store.append(RunCancelled(run_id=run_id, user_id="local", at=cancelled_at))
        await wait_state(store, run_id, timeout_s=5)
    [confirmed] = [e for e in await events_of(store, run_id) if isinstance(e, RunCancellationConfirmed)]
    assert confirmed.latency_ms == round(seconds * 1000, 1)
    assert _sample(LATENCIES) == timed + 1
    assert _sample(LATENCIES.replace("_count", "_sum")) - summed == pytest.approx(max(seconds, 0.0))


class SwallowsACancel(PipelineDouble):
    """A step whose client code swallows one cancellation (some libraries do) and goes on."""

    async def body(self, attempt: Attempt) -> None:
        await attempt.reporter.started(plan_steps(attempt.request.analysts)[0], 0)
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            pass
        await asyncio.sleep(3600)
        return None


async def test_a_pipeline_swallowing_the_cancel_is_stopped_at_once_all_the_same(
    redis_url: str, redis: Redis, keys: Keys
) -> None:
    """The cancel wakes the supervisor (``Execution.stopping``), which cancels the pipeline until
    it ends: not at the next step-timeout check (30 s here; the run must end within 10 s)."""
    store = EventStore(redis, keys)
    run_id = await submit(store)
    async with running_worker(redis_url, SwallowsACancel(), TT_STEP_TIMEOUT_S="30"):
        await wait_event(store, run_id, lambda e: isinstance(e, StepStarted))
        await store.append(RunCancelled(run_id=run_id, user_id="local"))
        state = await wait_state(store, run_id, timeout_s=10)
    assert state.status == "cancelled"


class IgnoresCancels(PipelineDouble):
    """A step that ignores every cancellation until ``obey`` (a client library gone wrong)."""

    def __init__(self) -> None:
        self.obey, self.ignored = False, 0

    async def body(self, attempt: Attempt) -> None:
        await attempt.reporter.started(plan_steps(attempt.request.analysts)[0], 0)
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if self.obey:
                    raise
                self.ignored += 1


async def test_a_runs_task_cancelled_cancels_its_pipeline_and_waits_for_it_only_so_long(
    redis_url: str, redis: Redis, keys: Keys
) -> None:
    """The runner's hard stop cancels the task of a run still going: the supervisor cancels the
    pipeline too, waits ``STOP_WAIT_S`` (5 s) for it and no longer, and the run's task ends
    cancelled (not as an error of its clean-up)."""
    store = EventStore(redis, keys)
    run_id = await submit(store)
    pipeline = IgnoresCancels()
    async with running_worker(redis_url, pipeline):
        await wait_event(store, run_id, lambda e: isinstance(e, StepStarted))
        tasks = asyncio.all_tasks()
        work = next(task for task in tasks if task.get_name() == f"pipeline-{run_id}")
        try:
            run = next(task for task in tasks if task.get_name().endswith(f"-run-{run_id}"))
            run.cancel()
            await asyncio.wait({run}, timeout=15)
            assert run.done() and run.cancelled(), run
            assert pipeline.ignored >= 1 and not work.done()
        finally:
            pipeline.obey = True
            work.cancel()
            await asyncio.wait({work})


async def test_cancelling_many_running_runs_confirms_each_once(
    redis_url: str, redis: Redis, keys: Keys
) -> None:
    store = EventStore(redis, keys)
    runs = [await submit(store, symbol="HANG") for _ in range(4)]
    async with running_worker(redis_url, CountingPipeline(redis), TT_RUNNER_CONCURRENCY="4"):
        for run_id in runs:
            await wait_event(store, run_id, lambda e: isinstance(e, StepStarted))
        for run_id in runs:
            await store.append(RunCancelled(run_id=run_id, user_id="local"))
        states = [await wait_state(store, r, timeout_s=5) for r in runs]
    assert {s.status for s in states} == {"cancelled"}
    for run_id in runs:
        events = await events_of(store, run_id)
        assert sum(isinstance(e, RunCancellationConfirmed) for e in events) == 1


async def test_cancelling_a_completed_run_changes_nothing(redis_url: str, redis: Redis, keys: Keys) -> None:
    store = EventStore(redis, keys)
    run_id = await submit(store)
    async with running_worker(redis_url, CountingPipeline(redis)):
        await wait_state(store, run_id)
    before = await events_of(store, run_id)
    with pytest.raises(Refused) as refused:
        await store.append(RunCancelled(run_id=run_id, user_id="local"))
    assert refused.value.reason is RefusalReason.ENDED
    assert await events_of(store, run_id) == before
    assert (await store.state(run_id)).status == "completed"  # type: ignore[union-attr]
    assert sum(isinstance(e, StepCompleted) for e in before) == len(plan_steps(("market", "risk")))


async def test_a_cancel_seen_by_no_live_runner_is_confirmed_by_the_one_taking_the_run_over(
    redis_url: str, redis: Redis, keys: Keys
) -> None:
    """The runner that started the run died before it saw the cancel: the runner taking the run
    over finds it in the replay and confirms it at once (no step runs), with the default reason."""
    store = EventStore(redis, keys)
    run_id = await submit(store, symbol="HANG")
    await redis.xgroup_create(keys.queue, RUNNERS_GROUP, id="0", mkstream=True)
    await redis.xreadgroup(RUNNERS_GROUP, "a-runner-that-died", {keys.queue: ">"})
    steps = plan_steps(("market", "risk"))
    await store.append(RunStarted(run_id=run_id, runner_id="died", attempt=1, steps=steps), fence="died")
    await store.append(RunCancelled(run_id=run_id, user_id="local"))
    async with running_worker(redis_url, CountingPipeline(redis), TT_LEASE_S="0.3") as worker:
        state = await wait_state(store, run_id, timeout_s=10)
    events = await events_of(store, run_id)
    confirmed = [e for e in events if isinstance(e, RunCancellationConfirmed)]
    assert state.status == "cancelled" and len(confirmed) == 1
    assert (confirmed[0].runner_id, confirmed[0].reason) == (worker.settings.runner_id, "requested by user")
    assert confirmed[0].latency_ms is None  # no RunCancelled was seen live: nothing to time
    assert not any(isinstance(e, StepStarted) for e in events)
    assert (await redis.xpending(keys.queue, RUNNERS_GROUP))["pending"] == 0
