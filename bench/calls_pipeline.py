"""A pipeline of ten model calls and nothing else, for the LLM-bound bench (``BENCH_LLM_PIPELINE=calls``).

Loaded by a runner through ``TT_RUNNER_PIPELINE=bench.calls_pipeline:build``: each step is one
call through the runner's own OpenAI-compatible client (``services/runner/pipeline/llm.py``) to
the model ``sim`` of the registry (``TT_MODELS``), reported as started, one progress event and
completed. Without the trading pipeline's analysis around the calls, what the runner spends
beyond the model's time is Tickertape's own: the figure the overhead goal is about, and the
workload a peer job queue can run the same way.
"""

from __future__ import annotations

import os

import httpx
from redis.asyncio import Redis

from bench.steps_pipeline import StepsPipeline
from services.runner.pipeline.base import StepReporter
from services.runner.pipeline.llm import ChatRequest, Message, OpenAIChat, RetryPolicy
from shared.events import RunRequested
from shared.models import load_registry
from shared.results import Usage

CALLS = int(os.environ.get("BENCH_CALLS", "10"))


class CallsPipeline(StepsPipeline):
    """``CALLS`` steps of one model call each."""

    prefix = "call"
    kind = "calls"

    def __init__(self, model: OpenAIChat) -> None:
        super().__init__(CALLS)
        self.model = model

    async def step(self, request: RunRequested, step: str, index: int, reporter: StepReporter) -> None:
        await reporter.started(step, index)
        ask = ChatRequest(
            task=step, messages=[Message("user", f"{request.run_id} step {index}")], max_tokens=300
        )
        answer = await self.model.complete(ask)
        await reporter.progress(step, 0.9, f"{answer.completion_tokens} tokens")
        usage = Usage(calls=1, prompt_tokens=answer.prompt_tokens, completion_tokens=answer.completion_tokens)
        await reporter.completed(step, None, 0.0, usage)


def build(redis: Redis, http: httpx.AsyncClient) -> CallsPipeline:
    spec = load_registry()["sim"]
    return CallsPipeline(OpenAIChat(spec, http, timeout_s=120.0, policy=RetryPolicy()))
