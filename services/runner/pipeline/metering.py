"""Every model call counted, priced, traced and held to the run's budget (fail closed)."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import TypeVar

import msgspec
from opentelemetry import trace

from services.runner.pipeline.base import PipelineError
from services.runner.pipeline.llm import (
    ChatModel,
    ChatRequest,
    Completion,
    Message,
    StreamingChat,
    TextSink,
    estimate_tokens,
)
from shared.models import ModelSpec
from shared.results import Usage

logger = logging.getLogger(__name__)
T = TypeVar("T")
Check = Callable[[T], str | None]
_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$", re.MULTILINE)


class Budget:
    """Tokens and cost spent by a run, against its limits."""

    def __init__(
        self, spec: ModelSpec, max_tokens: int | None, max_cost_usd: float | None, spent: Usage
    ) -> None:
        self.spec, self.max_tokens, self.max_cost_usd = spec, max_tokens, max_cost_usd
        self.spent = spent

    def check(self, prompt_tokens: int, completion_tokens: int) -> None:
        """Refuse a call whose worst case would pass a limit."""
        tokens = self.spent.tokens + prompt_tokens + completion_tokens
        cost = self.spent.cost_usd + self.spec.cost_usd(prompt_tokens, completion_tokens)
        self._enforce(tokens, cost, "the next call could take the run to")

    def record(self, usage: Usage) -> None:
        self.spent = self.spent + usage
        self._enforce(self.spent.tokens, self.spent.cost_usd, "the run has spent")

    def _enforce(self, tokens: int, cost: float, what: str) -> None:
        if self.max_tokens is not None and tokens > self.max_tokens:
            raise PipelineError(
                "budget_exceeded", f"run budget: {what} {tokens} tokens, over the limit of {self.max_tokens}"
            )
        if self.max_cost_usd is not None and cost > self.max_cost_usd:
            raise PipelineError(
                "budget_exceeded",
                f"run budget: {what} ${cost:.4f}, over the limit of ${self.max_cost_usd:.4f}",
            )


N = TypeVar("N", int, float)


def capped(requested: N | None, operator: N) -> N:
    """The request's own limit, never above the operator's."""
    return operator if requested is None else min(requested, operator)


class MeteredModel:
    """A chat model whose calls are checked against the budget, counted and traced."""

    def __init__(
        self, spec: ModelSpec, model: ChatModel, budget: Budget, tracer: trace.Tracer | None = None
    ) -> None:
        self.spec, self.model, self.budget = spec, model, budget
        self._tracer = tracer or trace.get_tracer("tickertape.pipeline")

    async def text(self, request: ChatRequest, sink: TextSink | None = None) -> str:
        """The model's answer as text; streamed into ``sink`` when the model can stream."""
        return (await self.complete(request, sink)).text.strip()

    async def complete(self, request: ChatRequest, sink: TextSink | None = None) -> Completion:
        """One metered call, tool calls and all."""
        max_tokens = min(request.max_tokens, self.spec.max_tokens)
        prompt = sum(estimate_tokens(m.content) for m in request.messages)
        self.budget.check(prompt, max_tokens)
        with self._tracer.start_as_current_span("llm.call") as span:
            span.set_attribute("llm.model", self.spec.id)
            span.set_attribute("llm.provider", self.spec.provider)
            span.set_attribute("llm.task", request.task)
            if sink is not None and isinstance(self.model, StreamingChat) and not request.tools:
                completion = await self.model.stream(request, sink)
            else:
                completion = await self.model.complete(request)
            span.set_attribute("llm.prompt_tokens", completion.prompt_tokens)
            span.set_attribute("llm.completion_tokens", completion.completion_tokens)
        cost = self.spec.cost_usd(completion.prompt_tokens, completion.completion_tokens)
        self.budget.record(
            Usage(
                calls=1,
                prompt_tokens=completion.prompt_tokens,
                completion_tokens=completion.completion_tokens,
                cost_usd=round(cost, 6),
            )
        )
        return completion

    async def structured(self, request: ChatRequest, kind: type[T], check: Check[T] | None = None) -> T:
        """The model's JSON answer validated into ``kind``; a malformed answer is re-asked once.

        ``check`` returns what is wrong with a well-typed answer (a value out of range), or None.
        """
        answer = await self.text(request)
        try:
            return parse_json(answer, kind, check)
        except ValueError as first:
            logger.warning(
                "malformed model answer, asking again", extra={"task": request.task, "error": str(first)}
            )
            retry = msgspec.structs.replace(
                request, messages=[*request.messages, *_correction(answer, first)]
            )
            answer = await self.text(retry)
        try:
            return parse_json(answer, kind, check)
        except ValueError as second:
            raise PipelineError(
                "malformed_output",
                f"{request.task}: the model's answer is not a valid {kind.__name__}: {second}",
            ) from second


def _correction(answer: str, error: ValueError) -> list[Message]:
    return [
        Message("assistant", answer),
        Message("user", f"That answer was invalid ({error}). Reply again with only the JSON object."),
    ]


def parse_json(answer: str, kind: type[T], check: Check[T] | None = None) -> T:
    """Decode ``answer`` (optionally fenced in a code block) into ``kind``; ValueError if it does not fit."""
    text = _FENCE.sub("", answer.strip())
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end < start:
        raise ValueError("no JSON object found")
    try:
        value = msgspec.json.decode(text[start : end + 1], type=kind)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise ValueError(str(exc)) from exc
    problem = check(value) if check else None
    if problem:
        raise ValueError(problem)
    return value
