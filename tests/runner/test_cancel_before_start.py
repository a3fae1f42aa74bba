"""The executor against runs that ended after it read them: a run cancelled while queued is never
started by a runner that read it first, and a dead-letter of a run that already ended appends
nothing (the append script refuses; the executor settles the entry anyway)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

import pytest
from redis.asyncio import Redis

from services.runner.eta import EtaBook
from services.runner.execution import Execution
from services.runner.metrics import metrics
from services.runner.queue import Job, WorkQueue
from services.runner.runs import Executor
from services.runner.watcher import CancelWatcher
from shared.events import RunCancelled, RunCompleted, RunRequested, RunStarted
from shared.keys import RUNNERS_GROUP, Keys
from shared.redis_io import ensure_group
from shared.store import Entry, EventStore
from tests.runner.support import CountingPipeline, events_of, runner_settings, started_key, submit


@dataclass
class Rig:
    """An executor of runner ``me`` over the test's Redis, and what it writes through."""

    executor: Executor
    store: EventStore
    queue: WorkQueue
    keys: Keys


@pytest.fixture
async def rig(redis: Redis, redis_url: str) -> AsyncIterator[Rig]:
    settings = runner_settings(redis_url, TT_RUNNER_ID="me", TT_MAX_ATTEMPTS="2")
    keys = settings.common.keys
    store = EventStore(redis, keys)
    queue = WorkQueue(redis, redis, keys, "me", settings.lease_ms)
    pipeline = CountingPipeline(redis)

    async def build() -> CountingPipeline:
        return pipeline

    watcher = CancelWatcher(store, redis, keys, "me", lambda run_id, event: None)
    executor = Executor(settings, store, queue, build, EtaBook(redis, keys), watcher, metrics())
    await ensure_group(redis, keys.queue, RUNNERS_GROUP)
    yield Rig(executor, store, queue, keys)


async def _read_first(rig: Rig) -> tuple[Job, list[Entry]]:
    """Deliver the next entry to this runner with its run's events, as the read loop does."""
    [(job, raw)] = await rig.queue.read_batch_with_runs([rig.keys.queue], 1, rig.keys.run(""))
    return job, rig.store.decode_entries(raw)


async def _pending(redis: Redis, keys: Keys) -> int:
    return int((await redis.xpending(keys.queue, RUNNERS_GROUP))["pending"])


async def test_a_run_cancelled_after_a_runner_read_it_is_never_started(
    rig: Rig, redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Kills: the append script letting a start through after a cancel of the queued run ("start
    after the end", "cancel while queued leaves it queued" in bench/mutate.py), and the executor
    running the pipeline after its start was refused."""
    calls: list[str] = []
    run = CountingPipeline.run

    async def recorded(self: CountingPipeline, request: RunRequested, *args: Any, **kwargs: Any) -> Any:
        calls.append(request.run_id)
        return await run(self, request, *args, **kwargs)

    monkeypatch.setattr(CountingPipeline, "run", recorded)
    run_id = await submit(rig.store)
    job, entries = await _read_first(rig)
    assert [type(e) for _, e in entries] == [RunRequested]
    await rig.store.append(RunCancelled(run_id=run_id, user_id="local"))

    await rig.executor.handle(Execution(job), entries)

    assert calls == [], "the pipeline ran a run whose start was refused"

    assert [type(e) for e in await events_of(rig.store, run_id)] == [RunRequested, RunCancelled]
    assert await redis.get(started_key(run_id, "data_collection")) is None
    assert await _pending(redis, rig.keys) == 0, "the entry of an ended run stays pending"
    assert not await redis.sismember(rig.keys.active("local"), run_id)
    assert await rig.store.phase(run_id) == "ended"


async def test_giving_up_on_a_run_that_ended_meanwhile_appends_nothing(rig: Rig, redis: Redis) -> None:
    """Kills: the ended guard skipped for ``abandon`` (a second terminal event), and ``_abandon``
    not handling the refusal (the entry left pending) or counting the run as failed anyway."""
    run_id = await submit(rig.store)
    job, entries = await _read_first(rig)
    await rig.store.append(RunStarted(run_id=run_id, runner_id="other", attempt=1, steps=()), fence="o")
    await rig.store.append(RunCompleted(run_id=run_id), fence="o")
    late = replace(job, deliveries=rig.executor.settings.max_attempts + 1)

    await rig.executor.handle(Execution(late), entries)

    assert [type(e) for e in await events_of(rig.store, run_id)] == [RunRequested, RunStarted, RunCompleted]
    assert rig.executor.finished["failed"] == 0
    assert await _pending(redis, rig.keys) == 0
    assert await redis.xlen(rig.keys.deadletter) == 1
