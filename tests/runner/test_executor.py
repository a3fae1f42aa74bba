"""The executor driving one entry with a pipeline that acts on the run meanwhile.

A retry, a release or a step event the append script refuses: the executor settles the entry only
when the run has ended, never when another runner took it over (that entry is the other runner's
now: acking it would leave the run with no pending entry to recover it from). And what a step
reports reaches the run's stream as reported (a resumed run skips steps by their outputs).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Any, Literal

import pytest
from redis.asyncio import Redis

from services.runner.eta import EtaBook
from services.runner.execution import Execution
from services.runner.metrics import metrics
from services.runner.pipeline.base import PipelineError, StepReporter
from services.runner.queue import WorkQueue
from services.runner.runs import Executor
from services.runner.watcher import CancelWatcher
from shared.events import (
    RunCompleted,
    RunFailed,
    RunRequested,
    RunRetrying,
    RunStarted,
    StepCompleted,
    StepStarted,
)
from shared.keys import RUNNERS_GROUP, Keys
from shared.redis_io import ensure_group
from shared.results import JsonOutput, RunResult, StepOutput, Usage
from shared.store import EventStore
from tests.runner.support import STEP_USAGE, events_of, runner_settings, submit

Ending = Literal["retry", "release", "step", "hang"]
Act = Callable[[str], Awaitable[None]]


class Meanwhile:
    """A pipeline during which someone else acts on the run (``act``), then ends in a transient
    error (a retry), is stopped for a hand-over (a release, as on a runner's shutdown), or reports
    a step (an append the script may refuse)."""

    def __init__(self, act: Act, ending: Ending) -> None:
        self.act, self.ending = act, ending
        self.executor: Executor | None = None
        self.spent: Usage | None = None

    async def run(
        self,
        request: RunRequested,
        done: Mapping[str, StepOutput | None],
        reporter: StepReporter,
        *,
        spent: Usage,
    ) -> RunResult | None:
        self.spent = spent
        await self.act(request.run_id)
        if self.ending == "retry":
            raise PipelineError("llm_unavailable", "the model answered 503", transient=True)
        if self.ending == "step":
            await reporter.started("data_collection", 0)
            return None
        if self.ending == "hang":
            await asyncio.sleep(3600)
        assert self.executor is not None
        self.executor.running[request.run_id].stop("released")
        await asyncio.sleep(3600)  # cancelled by the stop
        return None


class Reports:
    """A pipeline of one step that reports an output, its time and its usage."""

    output = JsonOutput(value={"close": [1.5, 2.5]}, task="fetch")

    async def run(
        self,
        request: RunRequested,
        done: Mapping[str, StepOutput | None],
        reporter: StepReporter,
        *,
        spent: Usage,
    ) -> RunResult | None:
        await reporter.started("data_collection", 0)
        await reporter.completed("data_collection", self.output, 0.25, STEP_USAGE)
        return None


async def _execute_once(
    redis: Redis,
    redis_url: str,
    keys: Keys,
    pipeline: Meanwhile | Reports,
    deliveries: int = 1,
    before: Act | None = None,
    **overrides: str,
) -> tuple[str, Executor]:
    """Submit a run, let ``before`` act on it, then let runner ``me`` execute its entry once."""
    settings = runner_settings(redis_url, TT_RUNNER_ID="me", **overrides)
    store = EventStore(redis, keys)
    queue = WorkQueue(redis, redis, keys, "me", settings.lease_ms)

    async def build() -> Meanwhile | Reports:
        return pipeline

    watcher = CancelWatcher(store, redis, keys, "me", lambda run_id, event: None)
    executor = Executor(settings, store, queue, build, EtaBook(redis, keys), watcher, metrics())
    if isinstance(pipeline, Meanwhile):
        pipeline.executor = executor
    await ensure_group(redis, keys.queue, RUNNERS_GROUP)
    run_id = await submit(store)
    if before is not None:
        await before(run_id)
    [(job, raw)] = await queue.read_batch_with_runs([keys.queue], 1, keys.run(""))
    await executor.handle(Execution(replace(job, deliveries=deliveries)), store.decode_entries(raw))
    assert not executor.running and not watcher.watched, "an execution's bookkeeping outlived it"
    return run_id, executor


async def _pending(redis: Redis, keys: Keys) -> list[tuple[bytes, str]]:
    rows: Any = await redis.xpending_range(keys.queue, RUNNERS_GROUP, "-", "+", 10)
    return [(row["consumer"], row["message_id"].decode()) for row in rows]


@pytest.mark.parametrize("ending", ["retry", "release", "step"])
async def test_a_run_that_ended_meanwhile_has_its_entry_acked_and_nothing_appended(
    redis: Redis, redis_url: str, keys: Keys, ending: Ending
) -> None:
    """Kills ``_retry``/``_release`` not acking on the ``ENDED`` refusal, and the reporter taking
    it for a lost lease (the entry would stay pending and be delivered again for a run that is
    over)."""
    store = EventStore(redis, keys)

    async def dead_lettered_elsewhere(run_id: str) -> None:
        await store.abandon(RunFailed(run_id=run_id, code="max_attempts", message="given up elsewhere"))

    pipeline = Meanwhile(dead_lettered_elsewhere, ending)
    run_id, executor = await _execute_once(redis, redis_url, keys, pipeline)

    events = await events_of(store, run_id)
    assert [type(e) for e in events] == [RunRequested, RunStarted, RunFailed]
    assert await _pending(redis, keys) == []
    assert not executor.finished, "a refused append counted as a terminal event"
    assert pipeline.spent == Usage()


@pytest.mark.parametrize("ending", ["retry", "release", "step"])
async def test_a_run_taken_over_meanwhile_keeps_the_new_owners_entry_pending(
    redis: Redis, redis_url: str, keys: Keys, ending: Ending
) -> None:
    """Kills ``is not ENDED`` (or any ack) on the ``FENCED`` refusal, in ``_retry``, ``_release``
    and the reporter's stop reason: XACK takes the entry out of the group whoever holds it, so the
    runner now executing the run would lose it."""
    store = EventStore(redis, keys)

    async def taken_over(run_id: str) -> None:
        [(_, entry_id)] = await _pending(redis, keys)
        await redis.xclaim(keys.queue, RUNNERS_GROUP, "usurper", 0, [entry_id], justid=True)
        usurper = RunStarted(run_id=run_id, runner_id="usurper", attempt=2, steps=())
        await store.append(usurper, fence="theirs")

    run_id, executor = await _execute_once(redis, redis_url, keys, Meanwhile(taken_over, ending))

    events = await events_of(store, run_id)
    assert [type(e) for e in events] == [RunRequested, RunStarted, RunStarted]
    assert not any(isinstance(e, RunFailed | RunRetrying) for e in events)
    assert [consumer for consumer, _ in await _pending(redis, keys)] == [b"usurper"]
    assert not executor.finished


async def test_a_steps_report_reaches_the_stream_as_reported(
    redis: Redis, redis_url: str, keys: Keys
) -> None:
    """The output (what a resumed run skips the step with), time, usage and attempt of a step."""
    store = EventStore(redis, keys)
    run_id, _ = await _execute_once(redis, redis_url, keys, Reports(), deliveries=2)

    events = await events_of(store, run_id)
    [started] = [e for e in events if isinstance(e, StepStarted)]
    [completed] = [e for e in events if isinstance(e, StepCompleted)]
    assert (started.step, started.index, started.attempt) == ("data_collection", 0, 2)
    assert (completed.output, completed.duration_s, completed.usage) == (Reports.output, 0.25, STEP_USAGE)
    assert isinstance(events[-1], RunCompleted) and events[-1].usage == STEP_USAGE


async def test_a_resumed_run_has_only_what_is_left_of_its_deadline(
    redis: Redis, redis_url: str, keys: Keys
) -> None:
    """Its first attempt started 2.1 s ago on Redis's clock and the deadline is 2 s: the next
    attempt times out at once, not after a deadline of its own (kills the time before this attempt
    dropped or added)."""
    store = EventStore(redis, keys)

    async def started_long_ago(run_id: str) -> None:
        await store.append(RunStarted(run_id=run_id, runner_id="gone", attempt=1, steps=()), fence="gone")
        await asyncio.sleep(2.1)

    async def nothing(run_id: str) -> None:
        pass

    began = asyncio.get_running_loop().time()
    run_id, _ = await _execute_once(
        redis, redis_url, keys, Meanwhile(nothing, "hang"), 2, started_long_ago, TT_RUN_DEADLINE_S="2"
    )
    spent = asyncio.get_running_loop().time() - began - 2.1
    last = (await events_of(store, run_id))[-1]
    assert isinstance(last, RunFailed) and (last.status, last.code) == ("timeout", "timeout")
    assert spent < 1.5, f"the resumed attempt ran {spent:.1f} s past the run's deadline"
