"""Tickertape's pipeline SDK: what an orchestrator implements to run durably under Tickertape.

A pipeline is an object with ``async def run(request, done, reporter, *, spent)``. Tickertape calls
it once per attempt; ``done`` holds the outputs of the steps earlier attempts completed (a resumed
run skips them and reuses their outputs), ``reporter`` turns each step's start, progress and end
into events, ``spent`` is what earlier attempts cost. Cancellation and deadlines arrive as
``asyncio.CancelledError`` at the pipeline's next ``await``. See docs/pipeline.md.

Register one with ``TT_PIPELINES=name=module:attribute`` (a LangGraph ``StateGraph`` works too).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from shared.events import RunRequested
from shared.results import JsonOutput, RunResult, StepOutput, Usage

__all__ = [
    "JsonOutput",
    "PipelineError",
    "Result",
    "RunRequested",
    "Runnable",
    "StepOutput",
    "StepReporter",
    "Steps",
    "Usage",
    "over_budget",
]

Result = RunResult | JsonOutput | None
"""What a run ends with: the built-in pipeline's ``RunResult``, or any JSON value in a JsonOutput."""


class StepReporter(Protocol):
    """Where the pipeline reports a step's life; the runner turns each call into an event."""

    async def started(self, step: str, index: int) -> None: ...

    async def progress(self, step: str, fraction: float, message: str = "") -> None: ...

    async def completed(
        self, step: str, output: StepOutput | None, duration_s: float, usage: Usage
    ) -> None: ...


class PipelineError(Exception):
    """A run cannot go on. ``transient`` errors are worth another attempt; others fail the run."""

    def __init__(self, code: str, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.transient = transient


class Runnable(Protocol):
    """What the runner needs of a pipeline.

    ``done``: outputs of the steps earlier attempts completed (skip them); ``spent``: what those
    attempts cost, which counts to the run's budget.
    """

    async def run(
        self,
        request: RunRequested,
        done: Mapping[str, StepOutput | None],
        reporter: StepReporter,
        *,
        spent: Usage,
    ) -> Result: ...


def over_budget(request: RunRequested, spent: Usage) -> str | None:
    """Why ``spent`` breaks the request's budget (``max_tokens``/``max_cost_usd``), or None."""
    opts = request.options
    if opts.max_tokens is not None and spent.tokens > opts.max_tokens:
        return f"run budget: {spent.tokens} tokens, over the limit of {opts.max_tokens}"
    if opts.max_cost_usd is not None and spent.cost_usd > opts.max_cost_usd:
        return f"run budget: ${spent.cost_usd:.4f}, over the limit of ${opts.max_cost_usd:.4f}"
    return None


NO_USAGE = Usage()
Progress = Callable[[float, str], Awaitable[None]]
"""``await progress(fraction, message)`` inside a step: 0 … 1 within that step."""


class Steps:
    """Runs named steps in order for one attempt: a step an earlier attempt completed is not run
    again (its stored output is returned), the others are reported and their values stored."""

    def __init__(
        self,
        request: RunRequested,
        done: Mapping[str, StepOutput | None],
        reporter: StepReporter,
        spent: Usage = NO_USAGE,
    ) -> None:
        self.request, self.done, self.reporter = request, done, reporter
        self.spent = spent
        self.index = 0

    async def run(
        self, name: str, work: Callable[[Progress], Awaitable[Any]], usage: Usage = NO_USAGE
    ) -> Any:
        """The step's JSON value: from ``done`` when already completed, else ``await work(progress)``."""
        index, self.index = self.index, self.index + 1
        if name in self.done:
            stored = self.done[name]
            return stored.value if isinstance(stored, JsonOutput) else stored
        if reason := over_budget(self.request, self.spent):
            raise PipelineError("budget_exceeded", reason)
        await self.reporter.started(name, index)
        began = time.monotonic()

        async def progress(fraction: float, message: str = "") -> None:
            await self.reporter.progress(name, fraction, message)

        value = await work(progress)
        self.spent = self.spent + usage
        await self.reporter.completed(name, JsonOutput(value=value), time.monotonic() - began, usage)
        return value
