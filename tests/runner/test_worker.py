"""A runner in this event loop against a real Redis: the happy path, priority, ETA, no-op runs."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from services.runner.eta import EtaBook, config_of
from services.runner.leases import Leases
from shared.catalog import plan_steps
from shared.events import RunCancelled, RunCompleted, RunRequested, RunStarted, StepCompleted, StepProgress
from shared.keys import RUNNERS_GROUP, Keys
from shared.redis_io import ensure_group
from shared.results import Usage
from shared.store import EventStore
from tests.runner.support import CountingPipeline, events_of, running_worker, submit, wait_state
from tests.support.pipelines import Attempt, PipelineDouble


@pytest.fixture
def held(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many entries the worker held after each time it took some."""
    counts: list[int] = []
    hold = Leases.hold

    def counting_hold(self: Leases, batch: Any) -> Any:
        items = hold(self, batch)
        counts.append(len(self.held))
        return items

    monkeypatch.setattr(Leases, "hold", counting_hold)
    return counts


async def test_a_run_completes_its_steps_and_its_entry_is_acked(
    redis_url: str, redis: Redis, keys: Keys
) -> None:
    store = EventStore(redis, keys)
    submitted = time.time()
    run_id = await submit(store)
    await asyncio.sleep(0.2)  # queued that long at least
    async with running_worker(redis_url, CountingPipeline(redis)):
        state = await wait_state(store, run_id)
    queued_at_most = time.time() - submitted
    assert state.status == "completed"
    assert state.result is not None and state.result.decision == "HOLD"
    events = await events_of(store, run_id)
    completed = [e.step for e in events if isinstance(e, StepCompleted)]
    assert completed == [s.name for s in state.steps]
    assert state.usage.calls == len(completed)
    # each step's progress reaches the stream as the pipeline reported it
    progress = [(e.step, e.progress, e.message) for e in events if isinstance(e, StepProgress)]
    assert progress == [(step, part / 4, f"{part}/4") for step in completed for part in range(1, 5)]
    started = [e for e in events if isinstance(e, RunStarted)]
    assert len(started) == 1 and started[0].attempt == 1
    waited = started[0].queue_wait_s  # seconds, to the millisecond
    assert 0.2 <= waited <= queued_at_most and waited == round(waited, 3)
    assert (await redis.xpending(keys.queue, RUNNERS_GROUP))["pending"] == 0
    assert not await redis.sismember(keys.active("local"), run_id)


class CompletesWithoutStarting(PipelineDouble):
    """Reports each step completed without starting it (e.g. a pipeline that found it cached)."""

    async def body(self, attempt: Attempt) -> None:
        for step in plan_steps(attempt.request.analysts):
            await attempt.reporter.completed(step, None, 0.0, Usage())
        return None


async def test_steps_reported_completed_without_a_start_complete_the_run(
    redis_url: str, redis: Redis, keys: Keys
) -> None:
    """The SDK's reporter takes ``completed`` alone (no span of the step to end, no error)."""
    store = EventStore(redis, keys)
    run_id = await submit(store)
    async with running_worker(redis_url, CompletesWithoutStarting()):
        state = await wait_state(store, run_id)
    assert state.status == "completed"
    completed = [e.step for e in await events_of(store, run_id) if isinstance(e, StepCompleted)]
    assert completed == list(plan_steps(("market", "risk")))


async def test_the_executing_gauge_counts_the_runs_held_and_falls_back_to_zero(
    redis_url: str, redis: Redis, keys: Keys
) -> None:
    """``tickertape_runs_executing``: one while the run executes, none once it ended."""
    store = EventStore(redis, keys)
    run_id = await submit(store, symbol="HANG")
    async with running_worker(redis_url, CountingPipeline(redis)):
        await wait_state(store, run_id, terminal=False)
        assert REGISTRY.get_sample_value("tickertape_runs_executing") == 1
        await store.append(RunCancelled(run_id=run_id, user_id="local"))
        await wait_state(store, run_id)
        async with asyncio.timeout(5):  # the worker frees the slot just after the terminal append
            while REGISTRY.get_sample_value("tickertape_runs_executing") != 0:
                await asyncio.sleep(0.02)


async def test_a_noop_run_completes_without_the_pipeline(redis_url: str, redis: Redis, keys: Keys) -> None:
    store = EventStore(redis, keys)
    run_id = await submit(store, pipeline="noop")
    async with running_worker(redis_url, CountingPipeline(redis)):
        state = await wait_state(store, run_id)
    assert state.status == "completed" and state.result is None and state.steps == []
    assert not await redis.keys("test:started:*")


async def test_high_priority_runs_are_read_first(redis_url: str, redis: Redis, keys: Keys) -> None:
    store = EventStore(redis, keys)
    normal = await submit(store, priority="normal")
    high = await submit(store, priority="high")
    async with running_worker(redis_url, CountingPipeline(redis), TT_RUNNER_CONCURRENCY="1"):
        first, second = await wait_state(store, high), await wait_state(store, normal)
    assert first.completed_at is not None and second.started_at is not None
    assert first.completed_at <= second.started_at


async def test_finished_runs_teach_the_eta_of_the_next_alike(
    redis_url: str, redis: Redis, keys: Keys
) -> None:
    store = EventStore(redis, keys)
    first = await submit(store)
    async with running_worker(redis_url, CountingPipeline(redis)):
        done = await wait_state(store, first)
        second = await submit(store)
        await wait_state(store, second)
    request = next(e for e in await events_of(store, first) if isinstance(e, RunRequested))
    assert await redis.llen(keys.eta(config_of(request))) == 2
    started = next(e for e in await events_of(store, second) if isinstance(e, RunStarted))
    assert started.expected_s is not None and started.expected_s > 0
    assert done.duration_s is not None
    assert await EtaBook(redis, keys).expected(request) is not None
    completed = next(e for e in await events_of(store, first) if isinstance(e, RunCompleted))
    assert completed.duration_s > 0


async def test_a_burst_of_starts_reads_the_eta_once(redis: Redis, keys: Keys) -> None:
    """1,000 runs admitted at once ask for the same config's ETA: one read serves them all."""
    book = EtaBook(redis, keys)
    request = RunRequested(run_id="r", user_id="u", symbol="AAPL", model_id="offline", analysts=("market",))
    await redis.rpush(keys.eta(config_of(request)), "12.0")
    await redis.config_resetstat()
    waiting = [asyncio.create_task(book.expected(request)) for _ in range(200)]
    await asyncio.sleep(0)  # all of them waiting for the read the first one sent
    waiting[0].cancel()  # a run cancelled while it waits does not cancel the others' read
    answers = await asyncio.gather(*waiting[1:])
    assert answers == [12.0] * 199
    reads = (await redis.info("commandstats")).get("cmdstat_lrange", {}).get("calls", 0)
    assert reads == 1


async def test_concurrency_bounds_how_many_runs_one_process_executes(
    redis_url: str, redis: Redis, keys: Keys
) -> None:
    store = EventStore(redis, keys)
    runs = [await submit(store) for _ in range(6)]
    async with running_worker(
        redis_url, CountingPipeline(redis, step_s=0.08), TT_RUNNER_CONCURRENCY="2"
    ) as worker:
        peak = 0
        while not all([await _terminal(store, r) for r in runs]):
            peak = max(peak, len(worker.leases.held))
            await asyncio.sleep(0.01)
    assert 1 <= peak <= 2


async def _terminal(store: EventStore, run_id: str) -> bool:
    state = await store.state(run_id)
    return state is not None and state.terminal


async def test_many_noop_runs_complete_once_within_the_concurrency_and_a_cancelled_one_never_starts(
    redis_url: str, redis: Redis, keys: Keys, held: list[int]
) -> None:
    store = EventStore(redis, keys)
    runs = [await submit(store, pipeline="noop") for _ in range(40)]
    cancelled = runs[7]
    await store.append(RunCancelled(run_id=cancelled, user_id="local"))
    high = await submit(store, pipeline="noop", priority="high")
    async with running_worker(redis_url, CountingPipeline(redis), TT_RUNNER_CONCURRENCY="3") as worker:
        for run_id in [*runs, high]:
            await wait_state(store, run_id)
        finished = dict(worker.executor.finished)
    assert held and max(held) <= 3 and len(held) < 41  # batches, never more than the concurrency
    assert finished == {"completed": 40}
    for run_id in [*runs, high]:
        events = await events_of(store, run_id)
        starts = [e for e in events if isinstance(e, RunStarted)]
        terminal = [e for e in events if isinstance(e, RunCompleted | RunCancelled)]
        assert len(terminal) == 1, run_id
        assert len(starts) == (0 if run_id == cancelled else 1), run_id
    assert (await redis.xpending(keys.queue, RUNNERS_GROUP))["pending"] == 0
    assert (await redis.xpending(keys.queue_high, RUNNERS_GROUP))["pending"] == 0
    assert await redis.scard(keys.active("local")) == 0
    starts_at = [(await events_of(store, r))[1].at for r in runs if r != cancelled]
    assert (await events_of(store, high))[1].at <= min(starts_at)  # the high-priority run went first
    request = next(e for e in await events_of(store, runs[0]) if isinstance(e, RunRequested))
    assert await redis.llen(keys.eta(config_of(request))) == 20  # durations flushed at stop, capped


async def test_a_takeover_during_a_blocking_read_never_exceeds_the_concurrency(
    redis_url: str, redis: Redis, keys: Keys, held: list[int]
) -> None:
    """An idle worker blocks on the queues for one entry; meanwhile a dead runner's entry turns
    claimable and the claim loop takes it; then a new run arrives and the blocking read returns
    it. One slot must not hold both."""
    store = EventStore(redis, keys)
    await ensure_group(redis, keys.queue, RUNNERS_GROUP)
    pipeline = CountingPipeline(redis, step_s=0.2)
    orphan = await submit(store)
    await redis.xreadgroup(RUNNERS_GROUP, "dead-runner", {keys.queue: ">"}, count=1)
    settings = {"TT_RUNNER_CONCURRENCY": "1", "TT_LEASE_S": "0.6", "TT_READ_BLOCK_S": "3"}
    async with running_worker(redis_url, pipeline, **settings) as worker:
        # The worker blocks on the empty queues until the orphan turns claimable (0.6 s).
        await wait_state(store, orphan, terminal=False)  # taken over by the claim loop
        fresh = await submit(store)
        for run_id in (orphan, fresh):
            await wait_state(store, run_id)
        finished = dict(worker.executor.finished)
    assert finished == {"completed": 2}
    assert held and max(held) <= 1, held
