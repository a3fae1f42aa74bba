"""Executing one held queue entry: replay, start with a fence, run the pipeline, end it once.

Outcomes: a terminal event and an ack; or RunFailed(will_retry) and the entry left pending for a
later attempt; or RunRetrying(released) and the entry handed over; or nothing at all when this
runner lost its lease (another runner owns the run now and the fence refused us).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import msgspec

from services.runner.eta import EtaBook
from services.runner.execution import (
    Execution,
    FencedReporter,
    traceparent_of,
    tracer,
)
from services.runner.metrics import RunnerMetrics
from services.runner.outcome import (
    STOP_WAIT_S,
    Outcome,
    backoff,
    outcome_of,
    timeout_event,
    until_cancelled,
)
from services.runner.queue import Job, WorkQueue
from services.runner.settings import RunnerSettings
from services.runner.watcher import CancelWatcher
from shared import streamids
from shared.catalog import has_steps, planned_steps
from shared.events import (
    AnyEvent,
    RunCancellationConfirmed,
    RunCancelled,
    RunCompleted,
    RunFailed,
    RunRequested,
    RunRetrying,
    RunStarted,
    StepCompleted,
    utcnow,
)
from shared.reducer import fold
from shared.results import StepOutput, Usage
from shared.run_state import RunState
from shared.store import Appends, Entry, EventStore, RefusalReason, Refused
from shared.telemetry import context_from_traceparent, run_id_var

if TYPE_CHECKING:
    from services.runner.pipeline.base import Runnable

logger = logging.getLogger(__name__)


class Prior(NamedTuple):
    """What an execution needs of its run's state before it: what earlier attempts spent, the
    last event seen, whether a cancel came while no runner held the run."""

    usage: Usage
    last_event_id: str
    cancel_requested: bool


class Executor:
    """Takes a held entry to its end; one instance per worker, shared by all its runs."""

    def __init__(
        self,
        settings: RunnerSettings,
        store: EventStore,
        queue: WorkQueue,
        pipeline: Callable[[], Awaitable[Runnable]],
        eta: EtaBook,
        watcher: CancelWatcher,
        metrics: RunnerMetrics,
    ) -> None:
        """``pipeline`` returns the pipeline, building it on first use (no-op runs never need it)."""
        self.settings = settings
        self.store = store
        self.queue = queue
        self.pipeline = pipeline
        self.eta = eta
        self.watcher = watcher
        self.metrics = metrics
        self.running: dict[str, Execution] = {}
        self._finished_counters: dict[str, Any] = {}
        self.finished: Counter[str] = Counter()
        """Terminal events this process appended, by status (the periodic summary reads it)."""

    def cancel(self, run_id: str, event: RunCancelled) -> None:
        """The watcher saw a RunCancelled: stop that run's pipeline now."""
        ex = self.running.get(run_id)
        if ex is not None and ex.stop("cancelled", event):
            logger.info("cancelling run %s", run_id, extra={"run_id": run_id})

    def _entry(self, job: Job) -> tuple[str, str, str]:
        return job.queue, self.queue.group, job.entry_id

    def _count(self, status: str) -> None:
        self.finished[status] += 1
        counter = self._finished_counters.get(status)
        if counter is None:
            counter = self._finished_counters[status] = self.metrics.runs_finished.labels(status=status)
        counter.inc()

    async def handle(self, ex: Execution, entries: list[Entry] | None = None) -> None:
        """Never raises: a failure here leaves the entry pending, so the lease hands it on.

        ``entries``: the run's events when the caller already read them.
        """
        run_id_var.set(ex.job.run_id or None)
        try:
            await self._handle(ex, entries)
        except Exception:
            logger.exception("entry %s of run %s left pending after an error", ex.job.entry_id, ex.job.run_id)

    async def _handle(self, ex: Execution, entries: list[Entry] | None) -> None:
        job = ex.job
        if entries is None:
            entries = await self.store.read(job.run_id) if job.run_id else []
        request = _request_of(entries)
        if request is None:
            await self._poison(job, "the entry names no run with a RunRequested")
            return
        state = fold(job.run_id, entries)
        if state.terminal:
            await self.queue.ack(job.queue, job.entry_id)
        elif job.deliveries > self.settings.max_attempts:
            await self._give_up(job, state)
        else:
            pipeline = await self.pipeline() if has_steps(request) else None
            if await self._start(ex, request, state):
                prior = Prior(state.usage, state.last_event_id, state.cancel_requested)
                # not kept for the run's life: ~2 KB a run in flight (docs/benchmarks.md, row 7)
                del state
                ctx = context_from_traceparent(request.traceparent)
                with tracer().start_as_current_span("run", context=ctx, attributes={"run_id": job.run_id}):
                    await self._execute(ex, request, prior, entries, pipeline)

    async def _poison(self, job: Job, detail: str) -> None:
        if job.run_id:
            event = RunFailed(run_id=job.run_id, code="poison", message=detail, attempt=job.deliveries)
            await self._abandon(event)
        await self.queue.deadletter(job, "poison", detail)
        self.metrics.deadletters.labels(reason="poison").inc()
        logger.warning("dead-lettered poison entry %s: %s", job.entry_id, detail)

    async def _give_up(self, job: Job, state: RunState) -> None:
        last = state.error.message if state.error else "no error recorded (lease expired)"
        detail = f"gave up after {job.deliveries - 1} attempts; last: {last}"
        event = RunFailed(run_id=job.run_id, code="max_attempts", message=detail, attempt=job.deliveries - 1)
        if await self._abandon(event):
            self._count("failed")
        await self.queue.deadletter(job, "max_attempts", detail)
        self.metrics.deadletters.labels(reason="max_attempts").inc()
        logger.warning("run %s dead-lettered: %s", job.run_id, detail)

    async def _abandon(self, event: AnyEvent) -> bool:
        try:
            await self.store.abandon(event)
        except Refused:
            return False
        return True

    def _started_event(
        self, ex: Execution, request: RunRequested, state: RunState, expected: float | None
    ) -> RunStarted:
        """This execution's RunStarted; sets its attempt, fence and owner."""
        job, settings = ex.job, self.settings
        ex.attempt = max(job.deliveries, state.attempt + 1)
        ex.fence = f"{settings.runner_id}:{job.entry_id}:{ex.attempt}:{secrets.token_hex(4)}"
        ex.owner = request.user_id
        first = state.started_at is None
        return RunStarted(
            run_id=job.run_id,
            runner_id=settings.runner_id,
            attempt=ex.attempt,
            steps=planned_steps(request),
            queue_wait_s=round(max(time.time() - job.enqueued_at, 0.0), 3) if first else 0.0,
            expected_s=expected,
            traceparent=request.traceparent,
        )

    async def _start(self, ex: Execution, request: RunRequested, state: RunState) -> bool:
        job = ex.job
        event = self._started_event(ex, request, state, await self.eta.expected(request))
        try:
            ex.started_id = await self.store.append(event, fence=ex.fence)
        except Refused as exc:
            logger.info("run %s not started: %s", job.run_id, exc.reason)
            if exc.reason is not RefusalReason.FENCED:
                await self.queue.ack(job.queue, job.entry_id)
            return False
        logger.debug("run %s started (attempt %d)", job.run_id, ex.attempt)
        return True

    async def _execute(
        self,
        ex: Execution,
        request: RunRequested,
        prior: Prior,
        entries: list[Entry],
        pipeline: Runnable | None,
    ) -> None:
        # Elapsed time is measured on Redis's clock (stream IDs) and then this process's monotonic
        # clock, never against another runner's wall clock: a resumed run is not timed out by skew.
        prior_s, began = _elapsed_before(entries, ex.started_id), time.monotonic()
        deadline_s = min(
            request.options.deadline_s or self.settings.run_deadline_s, self.settings.run_deadline_s
        )
        left = deadline_s - prior_s
        if prior.cancel_requested:  # cancelled while its previous runner was gone
            ex.stop("cancelled")
        if pipeline is None:  # zero steps: done at once, unless a stop (e.g. cancel) came first
            outcome = Outcome(ex.stop_reason or "completed")
        else:
            outcome = await self._watched(ex, request, prior, entries, pipeline, time.monotonic() + left)
        await self._finish(ex, request, prior, outcome, prior_s + time.monotonic() - began)

    async def _watched(
        self,
        ex: Execution,
        request: RunRequested,
        prior: Prior,
        entries: list[Entry],
        pipeline: Runnable,
        deadline: float,
    ) -> Outcome:
        run_id = ex.job.run_id
        self.running[run_id] = ex
        await self.watcher.watch(run_id, prior.last_event_id)
        try:
            return await self._supervise(ex, request, pipeline, _done_steps(entries), prior.usage, deadline)
        finally:
            self.running.pop(run_id, None)
            await self.watcher.unwatch(run_id)

    async def _supervise(
        self,
        ex: Execution,
        request: RunRequested,
        pipeline: Runnable,
        done: dict[str, StepOutput | None],
        spent: Usage,
        deadline: float,
    ) -> Outcome:
        reporter = FencedReporter(self.store, ex, request.model_id, self.metrics)
        work = pipeline.run(request, done, reporter, spent=spent)
        ex.task = asyncio.create_task(work, name=f"pipeline-{ex.job.run_id}")
        if ex.stop_reason is not None:
            ex.task.cancel()
        try:
            await self._until_done_or_late(ex, deadline)
        finally:
            reporter.close()
            if not ex.task.done():
                ex.task.cancel()
                await asyncio.wait({ex.task}, timeout=STOP_WAIT_S)
        return outcome_of(ex)

    async def _until_done_or_late(self, ex: Execution, deadline: float) -> None:
        assert ex.task is not None
        while not ex.task.done() and not ex.stopping.done():
            now = time.monotonic()
            step_deadline = ex.step_deadline(self.settings.step_timeout_s)
            if now >= min(deadline, step_deadline):
                ex.stop("timeout" if now >= deadline else "step_timeout")
                break
            # a step starting during this wait has its deadline after now + step timeout
            wake = min(deadline, step_deadline, now + self.settings.step_timeout_s)
            await asyncio.wait(
                {ex.task, ex.stopping}, timeout=wake - now, return_when=asyncio.FIRST_COMPLETED
            )
        await until_cancelled(ex)

    async def _finish(
        self, ex: Execution, request: RunRequested, prior: Prior, outcome: Outcome, elapsed_s: float
    ) -> None:
        run_id, attempt = ex.job.run_id, ex.attempt
        duration = round(elapsed_s, 3)
        match outcome.kind:
            case "completed":
                usage = prior.usage + ex.usage
                event = RunCompleted(
                    run_id=run_id,
                    result=outcome.result,
                    output=outcome.output,
                    duration_s=duration,
                    usage=usage,
                )
                if await self._terminal(ex, event, "completed", record=(request, duration)):
                    self.metrics.run_duration.observe(duration)
            case "failed":
                event_f = RunFailed(
                    run_id=run_id, code=outcome.code, message=outcome.message, attempt=attempt
                )
                await self._terminal(ex, event_f, "failed")
            case "timeout" | "step_timeout":
                await self._terminal(
                    ex, timeout_event(ex, outcome.kind, self.settings.step_timeout_s), "timeout"
                )
            case "cancelled":
                await self._confirm_cancel(ex)
            case "retry":
                await self._retry(ex, outcome)
            case "released":
                await self._release(ex)
            case "ended":
                await self.queue.ack(ex.job.queue, ex.job.entry_id)
            case "lost":
                logger.warning("run %s: lease lost to another runner; stopped without a trace", run_id)

    async def _terminal(
        self, ex: Execution, event: AnyEvent, status: str, record: tuple[RunRequested, float] | None = None
    ) -> bool:
        """Append the run's one terminal event with our fence and ack its entry, in one step
        (the entry stays pending only if the run is another runner's now)."""
        item = Appends((_traced(event),), fence=ex.fence, owner=ex.owner, ack=self._entry(ex.job))
        (result,) = await self.store.append_batch([item])
        if isinstance(result, Refused):
            logger.info("terminal %s of run %s refused: %s", status, ex.job.run_id, result.reason)
            return False
        if record is not None:
            self.eta.note(*record)
        self._count(status)
        logger.debug("run %s %s", ex.job.run_id, status)
        return True

    async def _confirm_cancel(self, ex: Execution) -> None:
        cancelled_at = ex.cancel_event.at if ex.cancel_event else None
        latency = (utcnow() - cancelled_at).total_seconds() if cancelled_at else None
        event = RunCancellationConfirmed(
            run_id=ex.job.run_id,
            runner_id=self.settings.runner_id,
            reason=ex.cancel_event.reason if ex.cancel_event else "requested by user",
            latency_ms=round(latency * 1000, 1) if latency is not None else None,
        )
        if await self._terminal(ex, event, "cancelled") and latency is not None:
            self.metrics.cancel_latency.observe(max(latency, 0.0))

    async def _retry(self, ex: Execution, outcome: Outcome) -> None:
        event = RunFailed(
            run_id=ex.job.run_id,
            code=outcome.code,
            message=outcome.message,
            attempt=ex.attempt,
            will_retry=True,
        )
        try:
            await self.store.append(_traced(event), fence=ex.fence, owner=ex.owner)
        except Refused as exc:
            logger.info("retry of run %s refused: %s", ex.job.run_id, exc.reason)
            if exc.reason is RefusalReason.ENDED:
                await self.queue.ack(ex.job.queue, ex.job.entry_id)
            return
        delay = backoff(self.settings.retry_backoff_s, ex.attempt)
        await self.queue.retry_after(ex.job, delay)
        logger.warning(
            "run %s attempt %d failed (%s); retry in %.1fs", ex.job.run_id, ex.attempt, outcome.code, delay
        )

    async def _release(self, ex: Execution) -> None:
        event = RunRetrying(run_id=ex.job.run_id, attempt=ex.attempt + 1, reason="released")
        try:
            await self.store.append(_traced(event), fence=ex.fence, owner=ex.owner)
        except Refused as exc:
            if exc.reason is RefusalReason.ENDED:
                await self.queue.ack(ex.job.queue, ex.job.entry_id)
            return
        await self.queue.release(ex.job)
        logger.info("run %s released for another runner", ex.job.run_id)


def _request_of(entries: list[Entry]) -> RunRequested | None:
    first = entries[0][1] if entries else None
    return first if isinstance(first, RunRequested) else None


def _done_steps(entries: list[Entry]) -> dict[str, StepOutput | None]:
    """Outputs of the steps that completed in earlier attempts: the pipeline skips them."""
    return {e.step: e.output for _, e in entries if isinstance(e, StepCompleted)}


def _traced(event: AnyEvent) -> AnyEvent:
    return msgspec.structs.replace(event, traceparent=traceparent_of(None))


def _elapsed_before(entries: list[Entry], started_id: str) -> float:
    """Seconds on Redis's clock from the run's first RunStarted to this execution's own."""
    first = next((entry_id for entry_id, event in entries if isinstance(event, RunStarted)), None)
    if first is None or not started_id:
        return 0.0
    return max(streamids.millis(started_id) - streamids.millis(first), 0) / 1000
