"""A registered pipeline (``TT_PIPELINES=hang=tests.support.hang_pipeline:pipeline``) whose one step
waits until it is cancelled: a run a test cancels, or one that ends by ``TT_STEP_TIMEOUT_S``."""

from __future__ import annotations

import asyncio

from shared.pipeline_sdk import JsonOutput, Steps
from tests.support.pipelines import Attempt, PipelineDouble


class Hang(PipelineDouble):
    async def body(self, attempt: Attempt) -> JsonOutput:
        async def wait(progress: object) -> None:
            await asyncio.Event().wait()

        await Steps(attempt.request, attempt.done, attempt.reporter, attempt.spent).run("wait", wait)
        return JsonOutput(value=None)


pipeline = Hang()
