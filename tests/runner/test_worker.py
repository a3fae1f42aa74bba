"""A runner in this event loop against a real Redis: the happy path, priority, ETA, no-op runs."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from services.runner.eta import EtaBook, config_of
from shared.events import RunCompleted, RunRequested, RunStarted, StepCompleted
from shared.keys import RUNNERS_GROUP, Keys
from shared.store import EventStore
from tests.runner.support import CountingPipeline, events_of, running_worker, submit, wait_state


async def test_a_run_completes_its_steps_and_its_entry_is_acked(
    redis_url: str, redis: Redis, keys: Keys
) -> None:
    store = EventStore(redis, keys)
    run_id = await submit(store)
    async with running_worker(redis_url, CountingPipeline(redis)):
        state = await wait_state(store, run_id)
    assert state.status == "completed"
    assert state.result is not None and state.result.decision == "HOLD"
    events = await events_of(store, run_id)
    completed = [e.step for e in events if isinstance(e, StepCompleted)]
    assert completed == [s.name for s in state.steps]
    assert state.usage.calls == len(completed)
    started = [e for e in events if isinstance(e, RunStarted)]
    assert len(started) == 1 and started[0].attempt == 1 and started[0].queue_wait_s >= 0
    assert (await redis.xpending(keys.queue, RUNNERS_GROUP))["pending"] == 0
    assert not await redis.sismember(keys.active("local"), run_id)


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
            peak = max(peak, len(worker._held))
            await asyncio.sleep(0.01)
    assert 1 <= peak <= 2


async def _terminal(store: EventStore, run_id: str) -> bool:
    state = await store.state(run_id)
    return state is not None and state.terminal
