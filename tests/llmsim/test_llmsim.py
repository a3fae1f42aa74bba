"""The LLM simulator as a real process, driven by the runner's own OpenAI-compatible client."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from services.llmsim.model import Dist, Planner, SimSettings, json_answer
from services.runner.pipeline.base import PipelineError
from services.runner.pipeline.llm import ChatRequest, Message, OpenAIChat, RetryPolicy
from shared.config import ConfigError
from shared.models import ModelSpec
from tests.support.processes import ServiceProcess

pytestmark = pytest.mark.timeout(40)
FAST = {
    "TT_LLMSIM_TTFT_S": "fixed:0.2",
    "TT_LLMSIM_TOKENS_PER_S": "fixed:200",
    "TT_LLMSIM_COMPLETION_TOKENS": "fixed:40",
}
"""A call then takes 0.2 + 40/200 = 0.4 s."""


def simulator(tmp_path: Path, **env: str) -> ServiceProcess:
    return ServiceProcess("llmsim", {**FAST, **env}, port_var="TT_LLMSIM_PORT", log_dir=tmp_path)


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[ServiceProcess]:
    with simulator(tmp_path, TT_LLMSIM_SEED="7") as process:
        yield process


def chat(process: ServiceProcess, http: httpx.AsyncClient, retries: int = 0) -> OpenAIChat:
    spec = ModelSpec(id="sim", provider="openai", base_url=f"{process.url}/v1", model="sim-1")
    return OpenAIChat(spec, http, timeout_s=10, policy=RetryPolicy(retries=retries, base_s=0.01, max_s=0.05))


def ask(text: str, json_mode: bool = False) -> ChatRequest:
    return ChatRequest(task="t", messages=[Message("user", text)], max_tokens=100, json=json_mode)


async def test_the_runner_client_gets_an_answer_with_usage_after_the_planned_time(
    sim: ServiceProcess,
) -> None:
    async with httpx.AsyncClient() as http:
        began = time.monotonic()
        completion = await chat(sim, http).complete(ask("Write the report."))
        took = time.monotonic() - began
    assert 0.38 <= took < 1.5
    assert completion.completion_tokens == 40
    assert len(completion.text.split()) == 40
    assert completion.prompt_tokens >= 1


async def test_json_mode_echoes_the_reference_the_prompt_quotes(sim: ServiceProcess) -> None:
    prompt = 'Answer shaped {"action": number}. Reference: {"action": "BUY", "entry": 10.5}. Thanks'
    async with httpx.AsyncClient() as http:
        completion = await chat(sim, http).complete(ask(prompt, json_mode=True))
    assert json.loads(completion.text) == {"action": "BUY", "entry": 10.5}


async def test_injected_429s_are_retried_by_the_client_and_counted(tmp_path: Path) -> None:
    with simulator(tmp_path, TT_LLMSIM_RATE_429="0.5", TT_LLMSIM_RETRY_AFTER_S="0.01") as process:
        async with httpx.AsyncClient() as http:
            model = chat(process, http, retries=20)
            for k in range(6):
                await model.complete(ask(f"call {k}"))
            stats = (await http.get(f"{process.url}/stats")).json()
    assert stats["statuses"]["200"] == 6
    assert stats["statuses"].get("429", 0) >= 1
    assert stats["simulated_s"] == pytest.approx(6 * 0.4, rel=0.01)


async def test_every_call_failing_with_5xx_surfaces_as_a_transient_pipeline_error(tmp_path: Path) -> None:
    with simulator(tmp_path, TT_LLMSIM_RATE_5XX="1") as process:
        async with httpx.AsyncClient() as http:
            with pytest.raises(PipelineError) as failed:
                await chat(process, http, retries=2).complete(ask("x"))
    assert failed.value.code == "llm_unavailable" and failed.value.transient


async def test_stream_sends_chunks_at_the_planned_pace_then_usage_and_done(sim: ServiceProcess) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True,
            "stream_options": {"include_usage": True}}  # fmt: skip
    arrivals: list[tuple[float, str]] = []
    async with httpx.AsyncClient() as http:
        async with http.stream("POST", f"{sim.url}/v1/chat/completions", json=body) as response:
            began = time.monotonic()  # the headers come at once; the first chunk after TTFT
            assert response.headers["content-type"].startswith("text/event-stream")
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    arrivals.append((time.monotonic() - began, line[6:]))
    assert arrivals[-1][1] == "[DONE]"
    docs = [json.loads(data) for _, data in arrivals[:-1]]
    text = "".join(d["choices"][0]["delta"].get("content") or "" for d in docs if d["choices"])
    assert len(text.split()) == 40
    assert docs[-1]["usage"]["completion_tokens"] == 40
    assert 0.15 <= arrivals[0][0] < 1.0  # the first token after TTFT (a loaded machine adds)
    assert arrivals[-1][0] >= 0.38  # the rest at 200 tokens/s
    assert len(docs) >= 40 // 8 + 2  # streamed in pieces, not all at once


async def test_a_tool_call_is_answered_with_arguments_for_the_required_properties(
    sim: ServiceProcess,
) -> None:
    tool = {"type": "function", "function": {"name": "quote", "parameters": {
        "type": "object", "properties": {"symbol": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["symbol", "days"]}}}  # fmt: skip
    asked: list[dict[str, str]] = [{"role": "user", "content": "price?"}]
    body = {"messages": asked, "tools": [tool]}
    async with httpx.AsyncClient() as http:
        answer = (await http.post(f"{sim.url}/v1/chat/completions", json=body)).json()
        done = {"messages": [*asked, {"role": "tool", "content": "42"}], "tools": [tool]}
        after = (await http.post(f"{sim.url}/v1/chat/completions", json=done)).json()
    choice = answer["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    call = choice["message"]["tool_calls"][0]["function"]
    assert call["name"] == "quote" and json.loads(call["arguments"]) == {"symbol": "x", "days": 1}
    assert after["choices"][0]["finish_reason"] == "stop"


async def test_a_bad_body_is_a_problem_naming_the_field(sim: ServiceProcess) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.post(f"{sim.url}/v1/chat/completions", json={"messages": [], "max_tokens": 5})
    assert response.status_code == 400
    assert response.json()["field"] == "messages"


async def test_the_same_seed_gives_the_same_answers_in_any_arrival_order(tmp_path: Path) -> None:
    answers = []
    for order in ([0, 1, 2, 3], [3, 1, 0, 2]):
        with simulator(tmp_path, TT_LLMSIM_SEED="11", TT_LLMSIM_COMPLETION_TOKENS="uniform:5,30") as process:
            async with httpx.AsyncClient() as http:
                model = chat(process, http)
                got = {k: (await model.complete(ask(f"q{k}"))).text for k in order}
        answers.append(got)
    assert answers[0] == answers[1]
    assert len(set(answers[0].values())) == 4


def test_plans_repeat_under_a_seed_and_differ_across_seeds() -> None:
    def plans(seed: int) -> list[tuple[int, float, int]]:
        env = {
            "TT_LLMSIM_SEED": str(seed),
            "TT_LLMSIM_RATE_429": "0.3",
            "TT_LLMSIM_TTFT_S": "lognormal:0.5,0.4",
        }
        planner = Planner(SimSettings.from_env(env))
        return [(p.status, p.ttft_s, p.tokens) for p in (planner.plan(b"same", 500) for _ in range(50))]

    assert plans(1) == plans(1)
    assert plans(1) != plans(2)
    statuses = [status for status, _, _ in plans(1)]
    assert 5 <= statuses.count(429) <= 25  # ~30 % of 50


def test_distributions_parse_and_draw_within_their_bounds() -> None:
    rng = random.Random(1)
    uniform = Dist.parse("X", "uniform:1,3")
    assert all(1 <= uniform.draw(rng) <= 3 for _ in range(200))
    assert Dist.parse("X", "2.5") == Dist("fixed", 2.5)
    assert Dist.parse("X", "lognormal:1,0").draw(rng) == 1.0
    for bad in ("uniform:1", "normal:1,2", "fixed:-1", "fixed:abc"):
        with pytest.raises(ConfigError, match="X"):
            Dist.parse("X", bad)
    with pytest.raises(ConfigError, match="RATE_429"):
        SimSettings.from_env({"TT_LLMSIM_RATE_429": "0.7", "TT_LLMSIM_RATE_5XX": "0.5"})


def test_json_answer_is_an_empty_object_when_nothing_is_quoted() -> None:
    assert json_answer('shaped {"a": number}') == "{}"
