"""The executor driving one entry with a pipeline that acts on the run meanwhile.

A retry, a release or a step event the append script refuses: the executor settles the entry only
when the run has ended, never when another runner took it over (that entry is the other runner's
now: acking it would leave the run with no pending entry to recover it from). And what a step
reports reaches the run's stream as reported (a resumed run skips steps by their outputs).
"""

from __future__ import annotations

import asyncio
import gc
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any, Literal

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from services.runner import execution as execution_module
from services.runner import runs as runs_module
from services.runner.eta import EtaBook
from services.runner.execution import Execution, ExecutionStopped
from services.runner.metrics import metrics
from services.runner.pipeline.base import PipelineError, Runnable
from services.runner.queue import WorkQueue
from services.runner.runs import Executor
from services.runner.watcher import CancelWatcher
from shared.catalog import plan_steps
from shared.events import (
    RunCancelled,
    RunCompleted,
    RunFailed,
    RunRequested,
    RunRetrying,
    RunStarted,
    StepCompleted,
    StepProgress,
    StepStarted,
)
from shared.keys import RUNNERS_GROUP, Keys
from shared.redis_io import ensure_group
from shared.results import JsonOutput, Usage
from shared.run_state import RunState
from shared.store import EventStore
from shared.telemetry import current_traceparent, run_id_var
from tests.runner.support import STEP_USAGE, events_of, runner_settings, submit
from tests.support.pipelines import Attempt, PipelineDouble

Ending = Literal["retry", "release", "step", "hang", "complete", "cancel"]
Act = Callable[[str], Awaitable[None]]


class Meanwhile(PipelineDouble):
    """A pipeline during which someone else acts on the run (``act``), then ends in a transient
    error (a retry), is stopped for a hand-over (a release, as on a runner's shutdown) or by the
    user's cancel, completes, or reports a step (each an append the script may refuse)."""

    def __init__(self, act: Act, ending: Ending) -> None:
        self.act, self.ending = act, ending
        self.executor: Executor | None = None
        self.spent: Usage | None = None
        self.stopped: str | None = None
        """What the refused step report told the pipeline (``ExecutionStopped``'s message)."""

    async def body(self, attempt: Attempt) -> None:
        self.spent, run_id = attempt.spent, attempt.request.run_id
        await self.act(run_id)
        if self.ending == "retry":
            raise PipelineError("llm_unavailable", "the model answered 503", transient=True)
        if self.ending == "step":
            try:
                await attempt.reporter.started("data_collection", 0)
            except ExecutionStopped as exc:
                self.stopped = str(exc)
                raise
            return None
        if self.ending == "complete":
            return None
        if self.ending == "hang":
            await asyncio.sleep(3600)
        assert self.executor is not None
        if self.ending == "cancel":
            self.executor.cancel(run_id, RunCancelled(run_id=run_id, user_id="local"))
        else:
            self.executor.running[run_id].stop("released")
        await asyncio.sleep(3600)  # cancelled by the stop
        return None


class Reports(PipelineDouble):
    """A pipeline of one step that reports an output, its time and its usage (``steps``: that
    many steps of the plan, each alike)."""

    output = JsonOutput(value={"close": [1.5, 2.5]}, task="fetch")

    def __init__(self, steps: int = 1) -> None:
        self.steps = steps
        self.task_name = ""
        self.logged_as: str | None = None

    async def body(self, attempt: Attempt) -> JsonOutput:
        self.task_name = asyncio.current_task().get_name()  # type: ignore[union-attr]
        self.logged_as = run_id_var.get()
        for index, step in enumerate(plan_steps(attempt.request.analysts)[: self.steps]):
            await attempt.reporter.started(step, index)
            await attempt.reporter.progress(step, 0.5)
            await attempt.reporter.completed(step, self.output, 0.25, STEP_USAGE)
        return self.output


async def _execute_once(
    redis: Redis,
    redis_url: str,
    keys: Keys,
    pipeline: Runnable,
    deliveries: int = 1,
    before: Act | None = None,
    execution: type[Execution] = Execution,
    traceparent: str | None = None,
    **overrides: str,
) -> tuple[str, Executor]:
    """Submit a run, let ``before`` act on it, then let runner ``me`` execute its entry once."""
    settings = runner_settings(redis_url, TT_RUNNER_ID="me", **overrides)
    store = EventStore(redis, keys)
    queue = WorkQueue(redis, redis, keys, "me", settings.lease_ms)

    async def build() -> Runnable:
        return pipeline

    watcher = CancelWatcher(store, redis, keys, "me", lambda run_id, event: None)
    executor = Executor(settings, store, queue, build, EtaBook(redis, keys), watcher, metrics())
    if isinstance(pipeline, Meanwhile):
        pipeline.executor = executor
    await ensure_group(redis, keys.queue, RUNNERS_GROUP)
    run_id = await submit(store, traceparent=traceparent)
    if before is not None:
        await before(run_id)
    [(job, raw)] = await queue.read_batch_with_runs([keys.queue], 1, keys.run(""))
    await executor.handle(execution(replace(job, deliveries=deliveries)), store.decode_entries(raw))
    assert not executor.running and not watcher.watched, "an execution's bookkeeping outlived it"
    return run_id, executor


async def _pending(redis: Redis, keys: Keys) -> list[tuple[bytes, str]]:
    rows: Any = await redis.xpending_range(keys.queue, RUNNERS_GROUP, "-", "+", 10)
    return [(row["consumer"], row["message_id"].decode()) for row in rows]


def _sample(name: str, **labels: str) -> float:
    """A runner metric of this process (the executors here share the default registry)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


DURATIONS = "tickertape_run_duration_seconds_count"
LATENCIES = "tickertape_cancel_latency_seconds_count"


@pytest.mark.parametrize("ending", ["retry", "release", "step", "complete", "cancel"])
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
    durations, latencies = _sample(DURATIONS), _sample(LATENCIES)
    run_id, executor = await _execute_once(redis, redis_url, keys, pipeline)

    events = await events_of(store, run_id)
    assert [type(e) for e in events] == [RunRequested, RunStarted, RunFailed]
    assert await _pending(redis, keys) == []
    assert not executor.finished, "a refused append counted as a terminal event"
    assert _sample(DURATIONS) == durations, "a refused completion timed as a completed run"
    assert _sample(LATENCIES) == latencies, "a refused cancel confirmation timed"
    assert pipeline.spent == Usage()
    if ending == "step":  # the pipeline is told which run refused it, and why
        assert pipeline.stopped == f"append to run {run_id} refused: ended"


@pytest.mark.parametrize("ending", ["retry", "release", "step", "complete", "cancel"])
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
    pipeline = Reports()
    began = time.monotonic()
    run_id, _ = await _execute_once(redis, redis_url, keys, pipeline, deliveries=2)
    took = time.monotonic() - began

    assert pipeline.task_name == f"pipeline-{run_id}"  # what a task dump shows an operator
    assert pipeline.logged_as == run_id  # every log line of the run carries its run_id
    events = await events_of(store, run_id)
    [started] = [e for e in events if isinstance(e, StepStarted)]
    [completed] = [e for e in events if isinstance(e, StepCompleted)]
    [progress] = [e for e in events if isinstance(e, StepProgress)]
    assert (started.step, started.index, started.attempt) == ("data_collection", 0, 2)
    assert (progress.step, progress.progress, progress.message) == ("data_collection", 0.5, "")
    assert (completed.output, completed.duration_s, completed.usage) == (Reports.output, 0.25, STEP_USAGE)
    assert isinstance(events[-1], RunCompleted) and events[-1].usage == STEP_USAGE
    assert events[-1].output == Reports.output.value  # a pipeline's JSON output is the run's
    duration = events[-1].duration_s
    assert 0 <= duration <= took and duration == round(duration, 3)  # seconds, to the millisecond


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
    run_id, executor = await _execute_once(
        redis, redis_url, keys, Meanwhile(nothing, "hang"), 2, started_long_ago, TT_RUN_DEADLINE_S="2"
    )
    spent = asyncio.get_running_loop().time() - began - 2.1
    events = await events_of(store, run_id)
    last = events[-1]
    assert isinstance(last, RunFailed) and (last.status, last.code) == ("timeout", "timeout")
    assert executor.finished == Counter(timeout=1)
    resumed = [e for e in events if isinstance(e, RunStarted)][-1]
    assert resumed.queue_wait_s == 0.0  # only a run's first start waited in the queue
    assert spent < 1.5, f"the resumed attempt ran {spent:.1f} s past the run's deadline"


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> InMemorySpanExporter:
    """The runner's spans, kept in memory: a provider of this test's own (no global one, which
    would trace every later test of the process), given where the runner looks its tracer up."""
    provider, exporter = TracerProvider(), InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    runner_tracer = provider.get_tracer("services.runner")
    for module in (execution_module, runs_module):
        monkeypatch.setattr(module, "tracer", lambda: runner_tracer)
    return exporter


def _traceparent(span: ReadableSpan) -> str:
    ctx = span.get_span_context()
    assert ctx is not None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


async def test_a_run_is_traced_under_its_request_and_each_event_names_its_span(
    redis: Redis, redis_url: str, keys: Keys, spans: InMemorySpanExporter
) -> None:
    """The run's span continues the trace of the request that submitted it (the gateway's
    ``traceparent``), each step has a span under it, ended when the step completes, and every
    event the runner appends names the span it was appended in (what ties a run's events to its
    trace in a tracing backend)."""
    tracer = TracerProvider().get_tracer("gateway")
    with tracer.start_as_current_span("submit"):
        submitted = current_traceparent()
    assert submitted is not None
    store = EventStore(redis, keys)
    run_id, _ = await _execute_once(redis, redis_url, keys, Reports(steps=2), traceparent=submitted)

    by_name = {span.name: span for span in spans.get_finished_spans()}
    first, second = plan_steps(("market", "risk"))[:2]
    run, step_a, step_b = by_name["run"], by_name[f"step {first}"], by_name[f"step {second}"]
    assert run.parent is not None and f"{run.parent.trace_id:032x}" == submitted.split("-")[1]
    assert f"{run.parent.span_id:016x}" == submitted.split("-")[2]
    for step in (step_a, step_b):
        assert step.parent is not None and step.parent.span_id == run.context.span_id
    assert {span.attributes["run_id"] for span in (run, step_a, step_b)} == {run_id}  # type: ignore[index]
    assert step_a.end_time is not None and step_b.start_time is not None
    assert step_a.end_time <= step_b.start_time, "a step's span outlived the step"

    events = await events_of(store, run_id)
    started = next(e for e in events if isinstance(e, RunStarted))
    assert started.traceparent == submitted
    for event in events:
        if isinstance(event, StepStarted | StepCompleted):
            assert event.traceparent == _traceparent(by_name[f"step {event.step}"]), event
    assert isinstance(events[-1], RunCompleted) and events[-1].traceparent == _traceparent(run)


async def test_a_steps_time_and_usage_are_counted_under_its_step_and_model(
    redis: Redis, redis_url: str, keys: Keys
) -> None:
    """The step histogram is labelled by step, the LLM counters by the run's model (``offline``),
    and a completed run is timed once."""
    step = plan_steps(("market", "risk"))[0]
    before = (
        _sample("tickertape_step_duration_seconds_count", step=step),
        _sample("tickertape_step_duration_seconds_sum", step=step),
        _sample("tickertape_llm_calls_total", model="offline"),
        _sample("tickertape_llm_tokens_total", model="offline", kind="prompt"),
        _sample("tickertape_llm_cost_usd_total", model="offline"),
        _sample(DURATIONS),
    )
    await _execute_once(redis, redis_url, keys, Reports())
    after = (
        _sample("tickertape_step_duration_seconds_count", step=step),
        _sample("tickertape_step_duration_seconds_sum", step=step),
        _sample("tickertape_llm_calls_total", model="offline"),
        _sample("tickertape_llm_tokens_total", model="offline", kind="prompt"),
        _sample("tickertape_llm_cost_usd_total", model="offline"),
        _sample(DURATIONS),
    )
    expected = (1, 0.25, STEP_USAGE.calls, STEP_USAGE.prompt_tokens, STEP_USAGE.cost_usd, 1)
    assert [b - a for a, b in zip(before, after, strict=True)] == pytest.approx(expected)


async def test_a_run_whose_every_lease_expired_is_given_up_saying_so(
    redis: Redis, redis_url: str, keys: Keys
) -> None:
    """No attempt recorded an error (each runner died or lost its lease): the final RunFailed
    says that rather than naming an error that never was."""
    store = EventStore(redis, keys)
    run_id, _ = await _execute_once(redis, redis_url, keys, Reports(), 4, TT_MAX_ATTEMPTS="3")
    last = (await events_of(store, run_id))[-1]
    assert isinstance(last, RunFailed) and last.code == "max_attempts"
    assert last.message == "gave up after 3 attempts; last: no error recorded (lease expired)"


class CountedChecks(Execution):
    """An execution that counts its supervisor's checks (each loop asks for the step deadline)."""

    checks = 0

    def step_deadline(self, step_timeout_s: float) -> float:
        type(self).checks += 1
        return super().step_deadline(step_timeout_s)


class HangsInAStep(PipelineDouble):
    async def body(self, attempt: Attempt) -> None:
        await asyncio.sleep(0.4)  # well into the supervisor's first wait
        await attempt.reporter.started(plan_steps(attempt.request.analysts)[0], 0)
        await asyncio.sleep(3600)
        return None


async def test_the_supervisor_wakes_at_a_steps_deadline_and_not_before(
    redis: Redis, redis_url: str, keys: Keys
) -> None:
    """The step starts 0.4 s into the supervisor's first wait, which ends at ``now + step
    timeout`` (1 s), before the step's deadline (1.4 s): the next wait must end at that deadline,
    not a whole step timeout later, where the run's own deadline (2 s) comes first and would end
    it as a run timeout. Meanwhile the supervisor sleeps: a handful of checks, not a busy loop.
    (Kills ``_until_done_or_late``'s wake-up without the step deadline, and at ``now - step
    timeout``; the outcome holds unless the event loop stalls 0.6 s.)"""
    store = EventStore(redis, keys)
    CountedChecks.checks = 0
    run_id, _ = await _execute_once(
        redis, redis_url, keys, HangsInAStep(), execution=CountedChecks,
        TT_STEP_TIMEOUT_S="1", TT_RUN_DEADLINE_S="2",
    )  # fmt: skip
    last = (await events_of(store, run_id))[-1]
    assert isinstance(last, RunFailed) and (last.status, last.code) == ("timeout", "step_timeout"), last
    assert CountedChecks.checks <= 5, f"{CountedChecks.checks} checks in one step timeout"


class MillisClock:
    """The runner's ``time`` for one test: its monotonic clock in whole milliseconds, plus
    ``extra`` (under half of one) from when the pipeline runs: a run's elapsed time then has a
    known fourth decimal, whatever the machine's speed."""

    def __init__(self) -> None:
        self.extra = 0.0

    def monotonic(self) -> float:
        return math.floor(time.monotonic() * 1000) / 1000 + self.extra

    def time(self) -> float:
        return time.time()


class SubMillisecond(Reports):
    def __init__(self, clock: MillisClock) -> None:
        super().__init__()
        self.clock = clock

    async def body(self, attempt: Attempt) -> JsonOutput:
        self.clock.extra = 0.0004567
        return await super().body(attempt)


async def test_a_runs_duration_is_its_elapsed_time_rounded_to_the_millisecond(
    redis: Redis, redis_url: str, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whole milliseconds and 0.4567 of one elapse: the duration is the milliseconds (a figure
    kept to four decimals would end in 5)."""
    clock = MillisClock()
    monkeypatch.setattr(runs_module, "time", clock)
    run_id, _ = await _execute_once(redis, redis_url, keys, SubMillisecond(clock))
    completed = (await events_of(EventStore(redis, keys), run_id))[-1]
    assert isinstance(completed, RunCompleted)
    millis = completed.duration_s * 1000
    assert millis == round(millis) and completed.duration_s == round(completed.duration_s, 3)


class CountsStates(PipelineDouble):
    """A pipeline that counts, while it runs, the folded states of its run still alive."""

    alive = -1

    async def body(self, attempt: Attempt) -> None:
        gc.collect()
        run_id = attempt.request.run_id
        self.alive = sum(isinstance(o, RunState) and o.run_id == run_id for o in gc.get_objects())


async def test_a_running_execution_does_not_keep_its_runs_folded_state(
    redis: Redis, redis_url: str, keys: Keys
) -> None:
    """Kills ``_handle`` keeping the RunState it folded for the whole run: ~2 KB (a state per
    planned step) held for every run in flight, a thousand of them at row 7's size."""
    pipeline = CountsStates()
    await _execute_once(redis, redis_url, keys, pipeline)
    assert pipeline.alive == 0
