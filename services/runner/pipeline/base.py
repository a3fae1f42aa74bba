"""The seam between durable execution (services/runner) and the analysis it executes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from shared.events import RunRequested
from shared.results import RunResult, StepOutput, Usage


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
    ) -> RunResult | None: ...
