"""A small stand-in for the analysis (real steps that sleep and count), and run helpers.

The counting pipeline is a test double for the trading-agents pipeline, not for Redis: it
records in Redis how often each step really ran, so tests can see across processes that no
completed step ran twice. ``build_test_pipeline`` is what a runner process loads through
``TT_RUNNER_PIPELINE=tests.runner.support:build_test_pipeline``.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import httpx
from redis.asyncio import Redis

from services.runner.pipeline.base import PipelineError, Runnable, StepReporter
from services.runner.settings import RunnerSettings
from services.runner.worker import Worker
from shared.catalog import plan_steps
from shared.config import Env
from shared.events import AnyEvent, RunOptions, RunRequested
from shared.ids import new_run_id
from shared.results import RunResult, Usage
from shared.run_state import RunState
from shared.store import EventStore
from shared.submits import Submitted
from tests.support.pipelines import Attempt, PipelineDouble

STEP_USAGE = Usage(calls=1, prompt_tokens=10, completion_tokens=5, cost_usd=0.001)


def started_key(run_id: str, step: str) -> str:
    return f"test:started:{run_id}:{step}"


def completed_key(run_id: str, step: str) -> str:
    return f"test:completed:{run_id}:{step}"


class CountingPipeline(PipelineDouble):
    """Each planned step sleeps ``step_s`` (in slices, with progress) and counts its runs.

    Symbols steer failures: ``FAIL`` raises a transient error in every attempt, ``FLAKY`` (first step) in the
    first two, ``PERM`` a permanent one; ``HANG`` steps sleep an hour (for timeouts and
    cancellation); ``LONG`` has a
    first step of 2.5 s (longer than a test lease).
    """

    def __init__(self, redis: Redis, step_s: float = 0.05) -> None:
        self.redis = redis
        self.step_s = step_s

    async def body(self, attempt: Attempt) -> RunResult:
        request = attempt.request
        for index, step in enumerate(plan_steps(request.analysts, request.options.pipeline)):
            if step not in attempt.done:
                await self._step(request, step, index, attempt.reporter)
        return RunResult(
            symbol=request.symbol, decision="HOLD", rating="Hold", confidence=0.5, horizon="1 week",
            rationale="test pipeline", key_risks=[], reports=[],
        )  # fmt: skip

    async def _step(self, request: RunRequested, step: str, index: int, reporter: StepReporter) -> None:
        await reporter.started(step, index)
        starts = await self.redis.incr(started_key(request.run_id, step))
        began = time.monotonic()
        if request.symbol == "FAIL" or (request.symbol == "FLAKY" and index == 0 and starts <= 2):
            raise PipelineError("llm_unavailable", "the model answered 503", transient=True)
        if request.symbol == "PERM":
            raise PipelineError("bad_model", "unknown model id", transient=False)
        seconds = {"HANG": 3600.0, "LONG": 2.5 if index == 0 else self.step_s}.get(
            request.symbol, self.step_s
        )
        for part in range(1, 5):
            await asyncio.sleep(seconds / 4)
            await reporter.progress(step, part / 4, f"{part}/4")
        await self.redis.incr(completed_key(request.run_id, step))
        await reporter.completed(step, None, time.monotonic() - began, STEP_USAGE)


def build_test_pipeline(redis: Redis, http: httpx.AsyncClient) -> CountingPipeline:
    return CountingPipeline(redis, float(os.environ.get("TT_TEST_STEP_S", "0.05")))


def runner_settings(redis_url: str, **overrides: str) -> RunnerSettings:
    env = {
        "REDIS_URL": redis_url, "TT_RUNNER_PORT": "0", "TT_LEASE_S": "2", "TT_CLAIM_INTERVAL_S": "0.1",
        "TT_RETRY_BACKOFF_S": "0.05", "TT_READ_BLOCK_S": "0.5", "TT_SHUTDOWN_GRACE_S": "1",
        "TT_LOG_FORMAT": "text", **overrides,
    }  # fmt: skip
    return RunnerSettings.from_env(Env(env))


@asynccontextmanager
async def running_worker(
    redis_url: str, pipeline: Runnable | None = None, **overrides: str
) -> AsyncIterator[Worker]:
    """A Worker in this event loop, consuming until the block ends (then stopped gracefully)."""
    worker = Worker(runner_settings(redis_url, **overrides), pipeline)
    task = asyncio.create_task(worker.run())
    try:
        await asyncio.wait_for(worker.ready.wait(), 10)
        yield worker
    finally:
        worker.request_stop()
        await asyncio.wait_for(task, 30)


async def counted_finished(worker: Worker, expected: Counter[str], timeout_s: float = 5) -> None:
    """Wait until the worker counted these terminal events: it counts just after the append, which
    a test reading the run's state can see first."""
    async with asyncio.timeout(timeout_s):
        while worker.executor.finished != expected:
            await asyncio.sleep(0.02)


async def submit(
    store: EventStore,
    *,
    symbol: str = "AAPL",
    analysts: tuple[str, ...] = ("market", "risk"),
    priority: str = "normal",
    traceparent: str | None = None,
    **options: object,
) -> str:
    run_id = new_run_id()
    request = RunRequested(
        run_id=run_id, user_id="local", symbol=symbol, model_id="offline", analysts=analysts,
        options=RunOptions(**options), priority=priority, traceparent=traceparent,  # type: ignore[arg-type]
    )  # fmt: skip
    assert isinstance(await store.submit(request), Submitted)
    return run_id


async def wait_state(
    store: EventStore, run_id: str, *, terminal: bool = True, timeout_s: float = 20.0
) -> RunState:
    """Poll the fold of the run's stream until it is terminal (or running, if not ``terminal``)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = await store.state(run_id)
        if state is not None and (state.terminal if terminal else state.status == "running"):
            return state
        await asyncio.sleep(0.02)
    raise AssertionError(
        f"run {run_id} not {'terminal' if terminal else 'running'}: {await store.state(run_id)}"
    )


async def wait_event(
    store: EventStore, run_id: str, predicate: Callable[[AnyEvent], bool], timeout_s: float = 20.0
) -> None:
    """Wait until the run's stream holds an event matching ``predicate``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(predicate(e) for _, e in await store.read(run_id)):
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"run {run_id}: event not seen in {timeout_s}s")


async def events_of(store: EventStore, run_id: str) -> list[AnyEvent]:
    return [e for _, e in await store.read(run_id)]


def report(line: str) -> None:
    """A measurement for the test output (``pytest -s``); timings never decide pass or fail."""
    print(f"\n{line}")  # noqa: T201 - the brief asks for the measurement in the test output
