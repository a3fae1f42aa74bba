"""A pipeline of K empty steps (``BENCH_STEPS``), loaded by a runner through TT_RUNNER_PIPELINE.

It measures what a step costs the runner (two fenced appends: StepStarted and StepCompleted),
not the analysis: ``TT_RUNNER_PIPELINE=bench.steps_pipeline:build``. The trading-agents pipeline
plans 4 + analysts steps (5 to 10), so 1 and 50 steps need this stand-in. Its loop over numbered
steps is the bench's one statement of the pipeline protocol: bench/calls_pipeline.py only
changes what a step does.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import httpx
from redis.asyncio import Redis

from services.runner.pipeline.base import StepReporter
from shared.events import RunRequested
from shared.results import RunResult, StepOutput, Usage

NO_USAGE = Usage()


class StepsPipeline:
    """``steps`` steps named ``{prefix}_{index}``; each only reports started and completed."""

    prefix = "bench"
    kind = "steps"

    def __init__(self, steps: int) -> None:
        self.steps = steps

    async def run(
        self,
        request: RunRequested,
        done: Mapping[str, StepOutput | None],
        reporter: StepReporter,
        *,
        spent: Usage,
    ) -> RunResult | None:
        for index in range(self.steps):
            step = f"{self.prefix}_{index}"
            if step not in done:
                await self.step(request, step, index, reporter)
        return RunResult(
            symbol=request.symbol, decision="HOLD", rating="Hold", confidence=0.5, horizon="1 week",
            rationale=f"bench {self.kind} pipeline", key_risks=[], reports=[],
        )  # fmt: skip

    async def step(self, request: RunRequested, step: str, index: int, reporter: StepReporter) -> None:
        """One step an earlier attempt did not complete."""
        await reporter.started(step, index)
        await reporter.completed(step, None, 0.0, NO_USAGE)


def build(redis: Redis, http: httpx.AsyncClient) -> StepsPipeline:
    return StepsPipeline(int(os.environ.get("BENCH_STEPS", "1")))
