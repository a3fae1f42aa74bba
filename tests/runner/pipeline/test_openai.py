"""The OpenAI-compatible client against a real local chat-completions server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

from services.runner.pipeline import Pipeline, PipelineError, PipelineSettings
from services.runner.pipeline.llm import ChatRequest, Message, OpenAIChat, RetryPolicy
from services.runner.pipeline.metering import Budget, MeteredModel
from services.runner.pipeline.prompts import check_assessment
from shared.models import ModelSpec
from shared.results import Assessment, TradeProposal, Usage
from tests.runner.pipeline.chat_server import ASSESSMENT, ChatServer, Reply, Slow, Status, serve
from tests.runner.pipeline.support import RecordingReporter, request

pytestmark = pytest.mark.timeout(30)
KEY_ENV = "TT_TEST_LLM_KEY"
ENVIRON = {KEY_ENV: "sk-test-secret"}
TEXT = ChatRequest(task="analyst:market", messages=[Message("user", "Write the report.")], max_tokens=100)
TRADE = ChatRequest(
    task="trader", messages=[Message("user", "Propose a trade on X.")], max_tokens=100, json=True
)
FINAL = ChatRequest(
    task="final_assessment",
    messages=[Message("user", "Give the final assessment.")],
    max_tokens=100,
    json=True,
)


@pytest.fixture
def chat() -> Iterator[ChatServer]:
    with serve(ChatServer()) as server:
        yield server


def spec(server: ChatServer) -> ModelSpec:
    return ModelSpec(
        id="local-test",
        provider="openai",
        base_url=server.base_url,
        api_key_env=KEY_ENV,
        model="test-model",
        prompt_usd_per_m=1.0,
        completion_usd_per_m=2.0,
    )


def client(
    server: ChatServer, http: httpx.AsyncClient, *, retries: int = 3, timeout_s: float = 5.0
) -> OpenAIChat:
    policy = RetryPolicy(retries=retries, base_s=0.01, max_s=2.0)
    return OpenAIChat(spec(server), http, timeout_s=timeout_s, policy=policy, environ=ENVIRON)


def metered(server: ChatServer, http: httpx.AsyncClient, max_cost_usd: float | None = None) -> MeteredModel:
    model_spec = spec(server)
    budget = Budget(model_spec, max_tokens=None, max_cost_usd=max_cost_usd, spent=Usage())
    return MeteredModel(model_spec, client(server, http), budget)


async def test_whole_pipeline_runs_through_the_server(
    redis: Redis, http: httpx.AsyncClient, chat: ChatServer, tmp_path: Path
) -> None:
    registry = tmp_path / "models.toml"
    registry.write_text(
        f'[models.local-test]\nlabel = "Local"\nprovider = "openai"\nbase_url = "{chat.base_url}"\n'
        f'api_key_env = "{KEY_ENV}"\nmodel = "test-model"\n'
        "prompt_usd_per_m = 1.0\ncompletion_usd_per_m = 2.0\n"
    )
    settings = replace(PipelineSettings(), models_path=registry)
    reporter = RecordingReporter()

    result = await Pipeline(settings, redis, http, environ=ENVIRON).run(
        request(model_id="local-test"), {}, reporter
    )

    assert result is not None
    assert result.decision == ASSESSMENT["decision"] and result.rating == ASSESSMENT["rating"]
    assert result.reports[0].summary == "Model summary line citing the numbers."
    # each analyst: two tool calls then its report (3 for each of 6); debate 3, trader, risk debate 3, manager
    assert reporter.usage.calls == len(chat.requests) == 18 + 3 + 1 + 3 + 1
    assert reporter.usage.prompt_tokens == 2600 and reporter.usage.completion_tokens == 520
    assert reporter.usage.cost_usd == pytest.approx(26 * (100 * 1.0 + 20 * 2.0) / 1e6)
    assert {h["authorization"] for h in chat.headers} == {"Bearer sk-test-secret"}
    assert {r["model"] for r in chat.requests} == {"test-model"}
    assert sum(1 for r in chat.requests if "response_format" in r) == 2
    tool_results = [m["content"] for m in chat.requests[2]["messages"] if m["role"] == "tool"]
    assert "rsi14" in tool_results[0]  # the market analyst read its numbers from its tool


async def test_429_then_success_honours_retry_after(http: httpx.AsyncClient, chat: ChatServer) -> None:
    chat.script = [Status(429, {"retry-after": "1"})]
    began = time.monotonic()
    completion = await client(chat, http).complete(TEXT)
    assert completion.text.startswith("Model summary") and len(chat.requests) == 2
    assert time.monotonic() - began >= 0.9


async def test_5xx_then_success_with_backoff(http: httpx.AsyncClient, chat: ChatServer) -> None:
    chat.script = [Status(503), Status(502)]
    completion = await client(chat, http).complete(TEXT)
    assert completion.prompt_tokens == 100 and len(chat.requests) == 3


async def test_500_storm_exhausts_retries(http: httpx.AsyncClient, chat: ChatServer) -> None:
    chat.script = [Status(500)] * 10
    with pytest.raises(PipelineError) as caught:
        await client(chat, http, retries=3).complete(TEXT)
    assert caught.value.code == "llm_unavailable" and caught.value.transient
    assert len(chat.requests) == 4


@pytest.mark.parametrize(("status", "code"), [(401, "llm_auth"), (403, "llm_auth"), (400, "llm_rejected")])
async def test_permanent_errors_are_not_retried(
    http: httpx.AsyncClient, chat: ChatServer, status: int, code: str
) -> None:
    chat.script = [Status(status)]
    with pytest.raises(PipelineError) as caught:
        await client(chat, http).complete(TEXT)
    assert caught.value.code == code and not caught.value.transient
    assert "sk-test-secret" not in caught.value.message
    assert len(chat.requests) == 1


async def test_malformed_json_is_asked_again_once_then_fails(
    http: httpx.AsyncClient, chat: ChatServer
) -> None:
    chat.script = [Reply("Sure! Here is my trade: buy."), Reply('{"action": "MAYBE", "entry": 1}')]
    model = metered(chat, http)
    with pytest.raises(PipelineError) as caught:
        await model.structured(TRADE, TradeProposal)
    assert caught.value.code == "malformed_output" and not caught.value.transient
    assert len(chat.requests) == 2 and model.budget.spent.calls == 2
    retry = chat.requests[1]["messages"]
    assert retry[-2] == {"role": "assistant", "content": "Sure! Here is my trade: buy."}
    assert "invalid" in retry[-1]["content"]


async def test_malformed_json_then_a_good_answer(http: httpx.AsyncClient, chat: ChatServer) -> None:
    out_of_range = '{"decision": "BUY", "rating": "Buy", "confidence": 7, "horizon": "h", "rationale": "r"}'
    chat.script = [Reply(out_of_range.replace("}", ', "key_risks": []}'))]
    answer = await metered(chat, http).structured(FINAL, Assessment, check_assessment)
    assert answer.confidence == ASSESSMENT["confidence"] and len(chat.requests) == 2


async def test_fenced_json_is_accepted(http: httpx.AsyncClient, chat: ChatServer) -> None:
    chat.script = [
        Reply(
            '```json\n{"action": "SELL", "entry": 10, "stop": 11, "position_pct": 2, "rationale": "x"}\n```'
        )
    ]
    answer = await metered(chat, http).structured(TRADE, TradeProposal)
    assert answer.action == "SELL" and len(chat.requests) == 1


async def test_cancelling_the_task_aborts_the_http_request(http: httpx.AsyncClient, chat: ChatServer) -> None:
    chat.script = [Slow(seconds=20)]
    task = asyncio.create_task(client(chat, http).complete(TEXT))
    try:
        assert await asyncio.to_thread(chat.received.wait, 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        task.cancel()
    assert await asyncio.to_thread(chat.disconnected.wait, 5), "the server never saw the client go away"


async def test_a_slow_answer_times_out_and_is_retried(http: httpx.AsyncClient, chat: ChatServer) -> None:
    chat.script = [Slow(seconds=3), Slow(seconds=3)]
    with pytest.raises(PipelineError) as caught:
        await client(chat, http, retries=1, timeout_s=0.3).complete(TEXT)
    assert caught.value.code == "llm_unavailable" and "timed out" in caught.value.message
    assert len(chat.requests) == 2


async def test_missing_api_key_is_a_config_error(http: httpx.AsyncClient, chat: ChatServer) -> None:
    with pytest.raises(PipelineError) as caught:
        OpenAIChat(spec(chat), http, timeout_s=1, policy=RetryPolicy(), environ={})
    assert caught.value.code == "llm_config" and KEY_ENV in caught.value.message


async def test_cost_budget_refuses_the_call_before_sending_it(
    http: httpx.AsyncClient, chat: ChatServer
) -> None:
    model = metered(chat, http, max_cost_usd=0.0001)  # 100 completion tokens at $2/M alone is $0.0002
    with pytest.raises(PipelineError) as caught:
        await model.text(TEXT)
    assert caught.value.code == "budget_exceeded" and chat.requests == []


async def test_each_call_is_traced_with_model_and_tokens(http: httpx.AsyncClient, chat: ChatServer) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    model_spec = spec(chat)
    budget = Budget(model_spec, max_tokens=None, max_cost_usd=None, spent=Usage())
    model = MeteredModel(model_spec, client(chat, http), budget, tracer=provider.get_tracer("test"))

    await model.text(TEXT)
    await model.text(TEXT)

    spans = exporter.get_finished_spans()
    assert [s.name for s in spans] == ["llm.call", "llm.call"]
    attributes = spans[0].attributes or {}
    assert attributes["llm.model"] == "local-test" and attributes["llm.task"] == "analyst:market"
    assert attributes["llm.prompt_tokens"] == 100 and attributes["llm.completion_tokens"] == 20
    assert budget.spent == Usage(calls=2, prompt_tokens=200, completion_tokens=40, cost_usd=0.00028)
