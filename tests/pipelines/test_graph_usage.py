"""LangChain chat models inside a graph: token usage per node step, and the run's budget."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from redis.asyncio import Redis

from services.cli.display import render_result
from services.runner.graph.adapter import GraphPipeline
from services.runner.graph.checkpoint import RedisSaver
from shared.events import RunOptions, RunRequested
from shared.keys import Keys
from shared.pipeline_sdk import PipelineError
from shared.results import Usage
from tests.pipelines.test_graph_adapter import Recorder
from tests.runner.pipeline.chat_server import ChatServer, serve


@pytest.fixture
def chat(monkeypatch: pytest.MonkeyPatch) -> Iterator[ChatServer]:
    with serve(ChatServer(prompt_tokens=100, completion_tokens=20)) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "test")
        yield server


def _request(**options: object) -> RunRequested:
    return RunRequested(
        run_id="u1",
        user_id="u",
        symbol="AAPL",
        model_id="m",
        analysts=(),
        options=RunOptions(**options),  # type: ignore[arg-type]
    )


async def test_each_model_call_counts_to_its_node_step(redis: Redis, chat: ChatServer) -> None:
    from examples.trading_agents_graph import build_graph

    recorder = Recorder()
    pipeline = GraphPipeline(build_graph(), RedisSaver(redis, Keys(), 600))
    await pipeline.run(_request(debate_rounds=1), {}, recorder, spent=Usage())
    one_call = Usage(calls=1, prompt_tokens=100, completion_tokens=20)
    assert recorder.usage["market_analyst#2"] == one_call and recorder.usage["trader"] == one_call
    assert recorder.usage["market_tools"] == Usage()  # a tool node calls no model
    assert sum(u.calls for u in recorder.usage.values()) == len(chat.requests)


async def test_a_spent_budget_refuses_the_next_model_call(redis: Redis, chat: ChatServer) -> None:
    from examples.trading_agents_graph import build_graph

    recorder = Recorder()
    pipeline = GraphPipeline(build_graph(), RedisSaver(redis, Keys(), 600))
    with pytest.raises(PipelineError, match="budget") as refused:
        await pipeline.run(_request(max_tokens=250), {}, recorder, spent=Usage())
    assert refused.value.code == "budget_exceeded" and not refused.value.transient
    assert len(chat.requests) == 3  # 120 + 120 tokens spent; the third call would pass 250


def test_the_cli_shows_a_graph_output_as_json() -> None:
    text = render_result({"runId": "r", "symbol": "AAPL", "status": "completed", "output": {"final": "BUY"}})
    assert '"final": "BUY"' in text
