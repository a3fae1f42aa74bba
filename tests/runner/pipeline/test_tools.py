"""Tool-using analysts against the local chat-completions server: calls, results kept as
evidence, the bound on calls, and the fallback for models and servers without tools."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from redis.asyncio import Redis

from services.runner.pipeline import Pipeline, PipelineSettings
from services.runner.pipeline.tools import unsourced
from shared.results import RunResult
from tests.runner.pipeline.chat_server import ChatServer, Reply, Status, serve
from tests.runner.pipeline.support import RecordingReporter, request

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def chat() -> Iterator[ChatServer]:
    with serve(ChatServer()) as server:
        yield server


def settings(chat: ChatServer, tmp_path: Path, *, tools: bool = True, limit: int = 4) -> PipelineSettings:
    registry = tmp_path / "models.toml"
    registry.write_text(
        f'[models.local]\nprovider = "openai"\nbase_url = "{chat.base_url}"\nmodel = "m"\n'
        f"tools = {'true' if tools else 'false'}\n"
    )
    return replace(PipelineSettings(), models_path=registry, max_tool_calls=limit)


async def run(chat: ChatServer, redis: Redis, http: httpx.AsyncClient, s: PipelineSettings) -> RunResult:
    result = await Pipeline(s, redis, http).run(
        request("AAPL", ("market",), model_id="local"), {}, RecordingReporter()
    )
    assert result is not None
    return result


def analyst_requests(chat: ChatServer) -> list[dict[str, Any]]:
    return [r for r in chat.requests if "market analyst" in r["messages"][0]["content"]]


async def test_an_analyst_calls_its_tools_and_keeps_the_results_as_evidence(
    chat: ChatServer, redis: Redis, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    result = await run(chat, redis, http, settings(chat, tmp_path))
    calls = result.reports[0].tool_calls
    assert [c.name for c in calls] == ["technical_indicators", "price_history"]
    indicators = msgspec.json.decode(calls[0].result)
    assert set(indicators) == {"numbers", "findings"} and "rsi14" in indicators["numbers"]
    asked = analyst_requests(chat)
    assert len(asked) == 3 and all("tools" in r for r in asked)
    answered = [m for m in asked[-1]["messages"] if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in answered] == ["call_0", "call_1"]
    assert answered[0]["content"] == calls[0].result  # what the model read is what the run keeps
    assert "rsi14" not in asked[0]["messages"][-1]["content"]  # numbers come from tools, not the prompt


async def test_the_number_of_tool_calls_is_bounded(
    chat: ChatServer, redis: Redis, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    result = await run(chat, redis, http, settings(chat, tmp_path, limit=1))
    assert [c.name for c in result.reports[0].tool_calls] == ["technical_indicators"]
    asked = analyst_requests(chat)
    assert len(asked) == 2 and "tools" not in asked[-1]  # past the bound: write the report now


async def test_a_model_without_tools_gets_the_evidence_in_the_prompt(
    chat: ChatServer, redis: Redis, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    result = await run(chat, redis, http, settings(chat, tmp_path, tools=False))
    assert result.reports[0].tool_calls == []
    asked = analyst_requests(chat)
    assert len(asked) == 1 and "tools" not in asked[0] and "rsi14" in asked[0]["messages"][-1]["content"]


async def test_a_server_rejecting_tools_falls_back_to_the_prompt(
    chat: ChatServer, redis: Redis, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    chat.script = [Status(400)]
    result = await run(chat, redis, http, settings(chat, tmp_path))
    assert result.reports[0].tool_calls == [] and result.reports[0].report
    asked = analyst_requests(chat)
    assert "tools" in asked[0] and "tools" not in asked[1] and "rsi14" in asked[1]["messages"][-1]["content"]


async def test_a_streamed_answer_shows_in_progress_as_it_is_written(
    chat: ChatServer, redis: Redis, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    words = " ".join(f"word{i}" for i in range(12))
    chat.script = [Reply(f"Market summary. {words}")]
    chat.chunk_delay_s = 0.1
    reporter = RecordingReporter()
    s = settings(chat, tmp_path, tools=False)
    result = await Pipeline(s, redis, http).run(request("AAPL", ("market",), model_id="local"), {}, reporter)
    assert result is not None and result.reports[0].report == f"Market summary. {words}"
    assert chat.requests[0]["stream"] is True and chat.requests[0]["stream_options"]["include_usage"]
    live = [m for step, _, m in reporter.ticks if step == "analyst:market" and "writing:" in m]
    assert 3 <= len(live) <= 8, live  # a few times a second over ~1.3 s, not once per chunk
    assert live[0] != live[-1] and live[-1].endswith("word11")
    assert reporter.finished[1].usage.prompt_tokens == 100  # the stream's usage chunk is counted


async def test_numbers_no_tool_returned_are_flagged_on_the_report(
    chat: ChatServer, redis: Redis, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    first = await run(chat, redis, http, settings(chat, tmp_path))
    uses = first.reports[0].tool_calls
    assert first.reports[0].unsourced == []  # the scripted report cites no number
    numbers = msgspec.json.decode(uses[0].result)["numbers"]
    text = (
        f"RSI(14) at {numbers['rsi14']:.1f}, three-month return {numbers['return_3m'] * 100:+.1f}%, "
        "and a made-up target of 987.65 over 3 months."
    )
    assert unsourced(text, uses) == ["987.65"]  # the RSI and the return came from the tool
