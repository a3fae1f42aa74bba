"""A native Tickertape pipeline wrapped around an orchestrator with an ``on_progress`` callback.

The orchestrator is shaped like the polling blueprint's ``runTradingAgentsAnalysis(symbol,
analysts, onProgress)``: it runs named steps and calls ``on_progress(step, progress, steps)``.
Under Tickertape each step goes through ``Steps.run``: a resumed run skips the steps an earlier
attempt completed and reuses their stored outputs.

    TT_PIPELINES=orchestrator=examples.orchestrator_pipeline:pipeline
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from shared.pipeline_sdk import JsonOutput, RunRequested, StepOutput, StepReporter, Steps, Usage

STEPS = ("fetch_prices", "analyse", "decide")
OnProgress = Callable[[str, float, tuple[str, ...]], Awaitable[None]]
Step = Callable[[str, Callable[[], Awaitable[Any]]], Awaitable[Any]]


async def run_trading_analysis(
    symbol: str, analysts: tuple[str, ...], on_progress: OnProgress, step: Step
) -> Any:
    """The user's orchestrator: three steps, progress through the callback."""

    async def fetch() -> list[float]:
        await on_progress("fetch_prices", 0.5, STEPS)
        await asyncio.sleep(0.01)  # a data vendor call
        return [100.0, 101.5, 103.0]

    prices: list[float] = await step("fetch_prices", fetch)

    async def analyse() -> dict[str, str]:
        return {analyst: "bullish" if prices[-1] > prices[0] else "bearish" for analyst in analysts}

    views: dict[str, str] = await step("analyse", analyse)

    async def decide() -> str:
        await on_progress("decide", 0.9, STEPS)
        return "BUY" if list(views.values()).count("bullish") * 2 > len(views) else "HOLD"

    return {"symbol": symbol, "views": views, "decision": await step("decide", decide)}


class OrchestratorPipeline:
    """The Tickertape side: the SDK's ``run``, mapping the callback onto the reporter."""

    async def run(
        self,
        request: RunRequested,
        done: Mapping[str, StepOutput | None],
        reporter: StepReporter,
        *,
        spent: Usage,
    ) -> JsonOutput:
        steps = Steps(request, done, reporter, spent)

        async def on_progress(step: str, progress: float, all_steps: tuple[str, ...]) -> None:
            await reporter.progress(step, progress, f"{step} ({all_steps.index(step) + 1}/{len(all_steps)})")

        async def step(name: str, work: Callable[[], Awaitable[Any]]) -> Any:
            return await steps.run(name, lambda _progress: work())

        result = await run_trading_analysis(request.symbol, request.analysts, on_progress, step)
        return JsonOutput(value=result)


pipeline = OrchestratorPipeline()
