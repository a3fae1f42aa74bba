"""One run as this process executes it: its fence, its pipeline task and why it was stopped."""

from __future__ import annotations

import asyncio
import functools
import time
from dataclasses import dataclass, field
from typing import Literal

import msgspec
from opentelemetry import trace

from services.runner.metrics import RunnerMetrics
from services.runner.queue import Job
from shared.events import AnyEvent, RunCancelled, StepCompleted, StepProgress, StepStarted
from shared.results import StepOutput, Usage
from shared.store import EventStore, RefusalReason, Refused
from shared.telemetry import current_traceparent

StopReason = Literal["cancelled", "timeout", "step_timeout", "released", "lost", "ended"]


class ExecutionStopped(Exception):
    """An append of this execution was refused: the run ended or another runner owns it now."""


@dataclass(slots=True)
class Execution:
    """Bookkeeping for one held queue entry, from dispatch to ack or release."""

    job: Job
    fence: str = ""
    owner: str | None = None
    """The run's user (from its RunRequested): terminal appends need no owner lookup."""
    attempt: int = 0
    started_id: str = ""
    """The run-stream ID of this execution's RunStarted: Redis's clock when it began."""
    task: asyncio.Task[object] | None = None
    stop_reason: StopReason | None = None
    cancel_event: RunCancelled | None = None
    step: str | None = None
    step_started: float = 0.0
    usage: Usage = field(default_factory=Usage)
    stopping: asyncio.Future[object] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    """Resolved by ``stop()``: wakes the supervisor, which makes sure the pipeline really ends."""

    def stop(self, reason: StopReason, cancel_event: RunCancelled | None = None) -> bool:
        """Ask the pipeline to stop; the first reason wins. False when already stopping."""
        if self.stop_reason is not None:
            return False
        self.stop_reason, self.cancel_event = reason, cancel_event
        if self.task is not None:
            self.task.cancel()
        if not self.stopping.done():
            self.stopping.set_result(None)
        return True

    def step_deadline(self, step_timeout_s: float) -> float:
        """Monotonic time by which the current step must end (inf between steps)."""
        return self.step_started + step_timeout_s if self.step else float("inf")


class FencedReporter:
    """The pipeline's StepReporter: every call is a fenced append to the run's stream."""

    def __init__(self, store: EventStore, execution: Execution, model: str, metrics: RunnerMetrics) -> None:
        self.store = store
        self.execution = execution
        self.run_id = execution.job.run_id
        self.model = model
        self.metrics = metrics
        self._spans: dict[str, trace.Span] = {}

    async def started(self, step: str, index: int) -> None:
        ex = self.execution
        ex.step, ex.step_started = step, time.monotonic()
        self._spans[step] = tracer().start_span(f"step {step}", attributes={"run_id": self.run_id})
        await self._append(StepStarted(run_id=self.run_id, step=step, index=index, attempt=ex.attempt))

    async def progress(self, step: str, fraction: float, message: str = "") -> None:
        await self._append(StepProgress(run_id=self.run_id, step=step, progress=fraction, message=message))

    async def completed(self, step: str, output: StepOutput | None, duration_s: float, usage: Usage) -> None:
        event = StepCompleted(
            run_id=self.run_id, step=step, output=output, duration_s=duration_s, usage=usage
        )
        await self._append(event)
        self.execution.usage = self.execution.usage + usage
        self.execution.step = None
        self.metrics.step_duration.labels(step=step).observe(duration_s)
        self.metrics.record_usage(self.model, usage)
        span = self._spans.pop(step, None)
        if span is not None:
            span.end()

    async def _append(self, event: AnyEvent) -> None:
        span = self._spans.get(self.execution.step or "")
        event = msgspec.structs.replace(event, traceparent=traceparent_of(span))
        try:
            await self.store.append(event, fence=self.execution.fence, owner=self.execution.owner)
        except Refused as exc:
            self.execution.stop("ended" if exc.reason is RefusalReason.ENDED else "lost")
            raise ExecutionStopped(str(exc)) from exc

    def close(self) -> None:
        for span in self._spans.values():
            span.end()
        self._spans.clear()


@functools.cache
def tracer() -> trace.Tracer:
    """The runner's tracer, looked up once (a proxy until the service installs its provider)."""
    return trace.get_tracer("services.runner")


def span_traceparent(span: trace.Span) -> str | None:
    """W3C traceparent of ``span``, formatted directly (no propagator and carrier per call)."""
    ctx = span.get_span_context()
    if not ctx.is_valid:
        return None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def traceparent_of(span: trace.Span | None) -> str | None:
    """The traceparent of ``span`` (the current span when None), to store in an event."""
    return current_traceparent() if span is None else span_traceparent(span)
