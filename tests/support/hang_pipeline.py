"""A registered pipeline (``TT_PIPELINES=hang=tests.support.hang_pipeline:pipeline``) whose one step
waits until it is cancelled: a run a test cancels, or one that ends by ``TT_STEP_TIMEOUT_S``."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from shared.pipeline_sdk import JsonOutput, RunRequested, StepOutput, StepReporter, Steps, Usage


class Hang:
    async def run(
        self,
        request: RunRequested,
        done: Mapping[str, StepOutput | None],
        reporter: StepReporter,
        *,
        spent: Usage,
    ) -> JsonOutput:
        async def wait(progress: object) -> None:
            await asyncio.Event().wait()

        await Steps(request, done, reporter, spent).run("wait", wait)
        return JsonOutput(value=None)


pipeline = Hang()
