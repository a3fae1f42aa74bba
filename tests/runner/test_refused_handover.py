"""A retry or a release the append script refuses: the executor settles the entry only when the run
has ended, never when another runner took it over (that entry is the other runner's now: acking it
would leave the run with no pending entry for anyone to recover it from)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal

import pytest
from redis.asyncio import Redis

from services.runner.eta import EtaBook
from services.runner.execution import Execution
from services.runner.metrics import metrics
from services.runner.pipeline.base import PipelineError, StepReporter
from services.runner.queue import Job, WorkQueue
from services.runner.runs import Executor
from services.runner.watcher import CancelWatcher
from shared.events import RunFailed, RunRequested, RunRetrying, RunStarted
from shared.keys import RUNNERS_GROUP, Keys
from shared.redis_io import ensure_group
from shared.results import RunResult, StepOutput, Usage
from shared.store import EventStore
from tests.runner.support import events_of, runner_settings, submit

Ending = Literal["retry", "release"]


class Meanwhile:
    """A pipeline during which someone else acts on the run (``act``), then ends in a transient
    error (a retry) or is stopped for a hand-over (a release, as on a runner's shutdown)."""

    def __init__(self, act: Callable[[str], Awaitable[None]], ending: Ending) -> None:
        self.act, self.ending = act, ending
        self.executor: Executor | None = None

    async def run(
        self,
        request: RunRequested,
        done: Mapping[str, StepOutput | None],
        reporter: StepReporter,
        *,
        spent: Usage,
    ) -> RunResult | None:
        await self.act(request.run_id)
        if self.ending == "retry":
            raise PipelineError("llm_unavailable", "the model answered 503", transient=True)
        assert self.executor is not None
        self.executor.running[request.run_id].stop("released")
        await asyncio.sleep(3600)  # cancelled by the stop
        return None


async def _execute_once(redis: Redis, redis_url: str, keys: Keys, pipeline: Meanwhile) -> tuple[str, Job]:
    """Submit a run and let runner ``me`` execute it with ``pipeline``: (run ID, its entry)."""
    settings = runner_settings(redis_url, TT_RUNNER_ID="me")
    store = EventStore(redis, keys)
    queue = WorkQueue(redis, redis, keys, "me", settings.lease_ms)

    async def build() -> Meanwhile:
        return pipeline

    watcher = CancelWatcher(store, redis, keys, "me", lambda run_id, event: None)
    executor = pipeline.executor = Executor(
        settings, store, queue, build, EtaBook(redis, keys), watcher, metrics()
    )
    await ensure_group(redis, keys.queue, RUNNERS_GROUP)
    run_id = await submit(store)
    [(job, raw)] = await queue.read_batch_with_runs([keys.queue], 1, keys.run(""))
    await executor.handle(Execution(job), store.decode_entries(raw))
    assert not executor.finished, "a refused retry or release counted as a terminal event"
    return run_id, job


async def _pending(redis: Redis, keys: Keys) -> list[tuple[bytes, str]]:
    rows: Any = await redis.xpending_range(keys.queue, RUNNERS_GROUP, "-", "+", 10)
    return [(row["consumer"], row["message_id"].decode()) for row in rows]


@pytest.mark.parametrize("ending", ["retry", "release"])
async def test_a_run_that_ended_meanwhile_has_its_entry_acked_and_nothing_appended(
    redis: Redis, redis_url: str, keys: Keys, ending: Ending
) -> None:
    """Kills ``_retry``/``_release`` not acking on the ``ENDED`` refusal (the entry would stay
    pending and be delivered again, attempt after attempt, for a run that is over)."""
    store = EventStore(redis, keys)

    async def dead_lettered_elsewhere(run_id: str) -> None:
        await store.abandon(RunFailed(run_id=run_id, code="max_attempts", message="given up elsewhere"))

    run_id, _ = await _execute_once(redis, redis_url, keys, Meanwhile(dead_lettered_elsewhere, ending))

    events = await events_of(store, run_id)
    assert [type(e) for e in events] == [RunRequested, RunStarted, RunFailed]
    assert await _pending(redis, keys) == []


@pytest.mark.parametrize("ending", ["retry", "release"])
async def test_a_run_taken_over_meanwhile_keeps_the_new_owners_entry_pending(
    redis: Redis, redis_url: str, keys: Keys, ending: Ending
) -> None:
    """Kills ``is not ENDED`` (or any ack) on the ``FENCED`` refusal: XACK takes the entry out of
    the group whoever holds it, so the runner now executing the run would lose it."""
    store = EventStore(redis, keys)

    async def taken_over(run_id: str) -> None:
        [(_, entry_id)] = await _pending(redis, keys)
        await redis.xclaim(keys.queue, RUNNERS_GROUP, "usurper", 0, [entry_id], justid=True)
        await store.append(
            RunStarted(run_id=run_id, runner_id="usurper", attempt=2, steps=()), fence="theirs"
        )

    run_id, job = await _execute_once(redis, redis_url, keys, Meanwhile(taken_over, ending))

    events = await events_of(store, run_id)
    assert [type(e) for e in events] == [RunRequested, RunStarted, RunStarted]
    assert not any(isinstance(e, RunFailed | RunRetrying) for e in events)
    assert await _pending(redis, keys) == [(b"usurper", job.entry_id)]
