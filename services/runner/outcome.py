"""How one execution of a run ended, read from its pipeline task, and the retry backoff."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass
from typing import Any, Literal

from services.runner.execution import Execution, StopReason
from shared.events import RunFailed
from shared.pipeline_sdk import PipelineError
from shared.results import JsonOutput, RunResult

logger = logging.getLogger(__name__)

OutcomeKind = Literal["completed", "failed", "retry"] | StopReason
STOP_WAIT_S = 5.0
"""How long a stopped pipeline gets to unwind before it is reported as ignoring cancellation."""


@dataclass(frozen=True, slots=True)
class Outcome:
    kind: OutcomeKind
    result: RunResult | None = None
    output: Any = None
    """A non-trading pipeline's final JSON value (RunCompleted.output)."""
    code: str = ""
    message: str = ""


async def until_cancelled(ex: Execution) -> None:
    """Cancel the pipeline until it has ended: a library that swallows one cancellation
    (it happens inside some client code) must not keep a cancelled run alive."""
    task, deadline = ex.task, time.monotonic() + STOP_WAIT_S
    assert task is not None
    while not task.done() and ex.stop_reason is not None and time.monotonic() < deadline:
        task.cancel()
        await asyncio.wait({task}, timeout=0.05)
    if not task.done() and ex.stop_reason is not None:
        logger.error("pipeline of run %s ignores cancellation", ex.job.run_id)


def outcome_of(ex: Execution) -> Outcome:
    """The outcome of an execution whose pipeline task has ended or was stopped."""
    task = ex.task
    assert task is not None
    if task.done() and not task.cancelled() and task.exception() is None:
        result = task.result()
        if isinstance(result, JsonOutput):
            return Outcome("completed", output=result.value)
        return Outcome("completed", result=result if isinstance(result, RunResult) else None)
    if ex.stop_reason is not None:
        return Outcome(ex.stop_reason)
    exc = task.exception() if task.done() and not task.cancelled() else None
    if isinstance(exc, PipelineError):
        return Outcome("retry" if exc.transient else "failed", code=exc.code, message=exc.message)
    logger.error("pipeline of run %s crashed", ex.job.run_id, exc_info=exc)
    return Outcome("retry", code="internal", message=f"{type(exc).__name__}: {exc}")


def timeout_event(ex: Execution, kind: str, step_timeout_s: float) -> RunFailed:
    """The terminal RunFailed(status timeout) of a run past its deadline or a step's."""
    if kind == "step_timeout":
        message = f"step {ex.step} ran longer than {step_timeout_s:g}s"
        return RunFailed(
            run_id=ex.job.run_id, code="step_timeout", message=message, attempt=ex.attempt, status="timeout"
        )
    message = "the run passed its deadline"
    return RunFailed(
        run_id=ex.job.run_id, code="timeout", message=message, attempt=ex.attempt, status="timeout"
    )


def backoff(base_s: float, attempt: int) -> float:
    """Exponential with full jitter around it: base · 2^(attempt-1) · [0.5, 1.5)."""
    return float(base_s * 2 ** (attempt - 1) * (0.5 + random.random()))
