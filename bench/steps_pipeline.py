"""A pipeline of K empty steps (``BENCH_STEPS``), loaded by a runner through TT_RUNNER_PIPELINE.

It measures what a step costs the runner (two fenced appends: StepStarted and StepCompleted),
not the analysis: ``TT_RUNNER_PIPELINE=bench.steps_pipeline:build``. The trading-agents pipeline
plans 4 + analysts steps (5 to 10), so 1 and 50 steps need this stand-in.
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
    """``steps`` steps that each only report started and completed."""

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
            step = f"bench_{index}"
            if step not in done:
                await reporter.started(step, index)
                await reporter.completed(step, None, 0.0, NO_USAGE)
        return RunResult(
            symbol=request.symbol, decision="HOLD", rating="Hold", confidence=0.5, horizon="1 week",
            rationale="bench steps pipeline", key_risks=[], reports=[],
        )  # fmt: skip


def build(redis: Redis, http: httpx.AsyncClient) -> StepsPipeline:
    return StepsPipeline(int(os.environ.get("BENCH_STEPS", "1")))
