"""A step's progress: pacing ticks, and the live text of a streaming answer."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from services.runner.pipeline.base import StepReporter
from services.runner.pipeline.llm import TextSink
from shared.results import Usage

TICKS = 3
"""Progress reports a step makes; the pacing delay is spread over them."""
LIVE_CHARS = 160
"""How much of a streaming answer a progress message carries (its newest words)."""


def usage_between(before: Usage, after: Usage) -> Usage:
    return Usage(
        calls=after.calls - before.calls,
        prompt_tokens=after.prompt_tokens - before.prompt_tokens,
        completion_tokens=after.completion_tokens - before.completion_tokens,
        cost_usd=round(after.cost_usd - before.cost_usd, 6),
    )


@dataclass
class Ticker:
    """A step's progress reports, with the pacing delay spread over them."""

    reporter: StepReporter
    step: str
    delay_s: float
    ticks: int = 0

    async def tick(self, fraction: float, message: str) -> None:
        await self.reporter.progress(self.step, fraction, message)
        self.ticks += 1
        if self.delay_s > 0 and self.ticks <= TICKS:
            await asyncio.sleep(self.delay_s / TICKS)

    def writing(self, fraction: float, who: str) -> TextSink:
        """Where a streamed answer goes: the step's progress message shows the text's tail."""

        async def sink(text: str) -> None:
            tail = " ".join(text.split())[-LIVE_CHARS:]
            await self.reporter.progress(self.step, fraction, f"{who} writing: …{tail}")

        return sink

    async def finish(self) -> None:
        """Sleep what is left of the step's pacing, so every step takes about the same time."""
        left = TICKS - self.ticks
        if self.delay_s > 0 and left > 0:
            await asyncio.sleep(self.delay_s * left / TICKS)
