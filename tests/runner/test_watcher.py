"""The cancel watcher reads one stream of cancels: a runner's own appends never wake it, so its
cost does not grow with the runs it holds, and a cancel reaches the run it names at once."""

from __future__ import annotations

import asyncio
import contextlib

from redis.asyncio import Redis

from services.runner.watcher import CancelWatcher
from shared.events import RunCancelled, RunStarted, StepStarted
from shared.keys import Keys
from shared.redis_io import connect
from shared.store import EventStore
from tests.runner.support import submit

RUNS = 30


async def test_own_appends_do_not_wake_the_watcher_and_a_cancel_arrives(redis: Redis, redis_url: str) -> None:
    """Kills: watching every held run's stream (each append wakes the read and Redis scans all
    of them: quadratic in the runs in flight), and a cancel not reaching a watched run."""
    keys = Keys("tt:")
    store = EventStore(redis, keys)
    cancelled: list[str] = []
    reader = connect(redis_url, blocking=True)
    watcher = CancelWatcher(store, reader, keys, "w1", lambda run_id, event: cancelled.append(run_id))
    await watcher.open()
    task = asyncio.create_task(watcher.run(block_ms=2000))
    try:
        runs = [await submit(store) for _ in range(RUNS)]
        for run_id in runs:
            await store.append(RunStarted(run_id=run_id, runner_id="w1", attempt=1, steps=()), fence="f")
            await watcher.watch(run_id)
        await asyncio.sleep(0.2)
        rounds = watcher.streams.rounds
        for step in range(5):  # what running runs append all the time
            for run_id in runs:
                await store.append(StepStarted(run_id=run_id, step=f"s{step}", index=step), fence="f")
        await asyncio.sleep(0.3)
        assert watcher.streams.rounds == rounds, "the runner's own appends woke the cancel watcher"

        await store.append(RunCancelled(run_id=runs[7], user_id="local"))
        for _ in range(100):
            if cancelled:
                break
            await asyncio.sleep(0.01)
        assert cancelled == [runs[7]]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await watcher.close()
        await reader.aclose()


async def test_a_cancel_read_before_its_run_is_watched_is_handed_over_on_watch(redis: Redis) -> None:
    """A cancel landing between a run's start and its watch() is not lost."""
    keys = Keys("tt:")
    store = EventStore(redis, keys)
    cancelled: list[str] = []
    watcher = CancelWatcher(store, redis, keys, "w1", lambda run_id, event: cancelled.append(run_id))
    await watcher.open()
    run_id = await submit(store)
    await store.append(RunStarted(run_id=run_id, runner_id="w1", attempt=1, steps=()), fence="f")
    await store.append(RunCancelled(run_id=run_id, user_id="local"))
    await watcher.streams.read_once()
    assert cancelled == []
    await watcher.watch(run_id)
    assert cancelled == [run_id]
