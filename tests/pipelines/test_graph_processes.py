"""The TradingAgents-shaped example graph run by real runner processes: kill -9 mid-debate.

The chat server (the project's OpenAI-compatible test server, with tool calls) logs every model
call, tagged by the node that made it; every model-calling node makes one call per execution,
so the log counts node executions across both processes.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from shared.events import AnyEvent, RunOptions, RunRequested, RunStarted, StepCompleted, StepStarted
from shared.ids import new_run_id
from shared.keys import Keys
from shared.store import EventStore
from shared.submits import Submitted
from tests.runner.pipeline.chat_server import ChatServer, serve
from tests.runner.support import events_of, report, wait_event, wait_state
from tests.support.processes import ServiceProcess

GRAPH = "trading-agents=examples.trading_agents_graph:build_graph"
CLEAN_STEPS = [
    *("market_analyst", "market_tools", "market_analyst#2", "market_tools#2", "market_analyst#3"),
    *("fundamentals_analyst", "fundamentals_tools", "fundamentals_analyst#2"),
    *("bull_researcher", "bear_researcher", "bull_researcher#2", "bear_researcher#2"),
    *("research_manager", "trader"),
    *("aggressive_analyst", "conservative_analyst", "neutral_analyst"),
    *("aggressive_analyst#2", "conservative_analyst#2", "neutral_analyst#2", "portfolio_manager"),
]
ROLE = re.compile(r"^\[([a-z ]+)\]")


@pytest.fixture
def chat() -> Iterator[ChatServer]:
    server = ChatServer()
    server.delay_s = 0.3  # a kill lands while a node waits for its model
    with serve(server) as running:
        yield running


@pytest.fixture
def runners(redis_url: str, chat: ChatServer, tmp_path: Path) -> Iterator[dict[str, ServiceProcess]]:
    env = {
        "REDIS_URL": redis_url, "TT_LEASE_S": "2", "TT_CLAIM_INTERVAL_S": "0.2",
        "TT_SHUTDOWN_GRACE_S": "0.3", "TT_PIPELINES": GRAPH,
        "OPENAI_BASE_URL": chat.base_url, "OPENAI_API_KEY": "test",
    }  # fmt: skip
    made = {
        name: ServiceProcess("runner", {**env, "TT_RUNNER_ID": name}, log_dir=tmp_path)
        for name in ("runner-a", "runner-b")
    }
    yield made
    for proc in made.values():
        proc.stop(timeout_s=10)


def node_of(step: str) -> str:
    return step.partition("#")[0]


def in_flight_at_kill(events: list[AnyEvent]) -> set[str]:
    """Steps the first attempt started and did not complete."""
    first = events[: next(i for i, e in enumerate(events) if isinstance(e, RunStarted) and e.attempt == 2)]
    started = {e.step for e in first if isinstance(e, StepStarted)}
    return started - {e.step for e in first if isinstance(e, StepCompleted)}


def executions(chat: ChatServer) -> Counter[str]:
    """Model calls by node, read from the role tag of each request's system message."""
    found: Counter[str] = Counter()
    for body in chat.requests:
        match = ROLE.match(str(body["messages"][0]["content"]))
        assert match is not None, body["messages"][0]
        found[match.group(1).replace(" ", "_")] += 1
    return found


async def test_a_graph_run_killed_mid_debate_resumes_without_rerunning_a_completed_node(
    redis: Redis, keys: Keys, runners: dict[str, ServiceProcess], chat: ChatServer
) -> None:
    store = EventStore(redis, keys)
    for proc in runners.values():
        proc.start(wait=False)
    for proc in runners.values():
        proc.wait_healthy(30)
    run_id = new_run_id()
    request = RunRequested(
        run_id=run_id, user_id="local", symbol="AAPL", model_id="test-model", analysts=(),
        options=RunOptions(debate_rounds=2), pipeline="trading-agents",
    )  # fmt: skip
    assert isinstance(await store.submit(request), Submitted)
    await wait_event(store, run_id, lambda e: isinstance(e, StepCompleted) and e.step == "bull_researcher")
    victim = next(e.runner_id for e in await events_of(store, run_id) if isinstance(e, RunStarted))
    runners[victim].kill()
    killed = time.monotonic()
    state = await wait_state(store, run_id, timeout_s=60)
    report(f"graph run resumed and finished {time.monotonic() - killed:.2f}s after kill -9 (lease 2 s)")
    assert state.status == "completed", state.error
    events = await events_of(store, run_id)
    completed = [e.step for e in events if isinstance(e, StepCompleted)]
    assert sorted(completed) == sorted(CLEAN_STEPS)  # each node execution of a clean run, once
    runners_seen = [e.runner_id for e in events if isinstance(e, RunStarted)]
    assert runners_seen[0] == victim and len(set(runners_seen)) == 2
    # the node in flight at the kill: started in the first attempt, completed only in the second
    in_flight = {node_of(step) for step in in_flight_at_kill(events)}
    calls = executions(chat)
    llm_steps = Counter(node_of(s) for s in completed if not s.partition("#")[0].endswith("_tools"))
    extra = calls - llm_steps
    assert sum(extra.values()) <= 1 and set(extra) <= in_flight, (extra, in_flight)
    assert not llm_steps - calls  # and none ran fewer times than it completed
    # a node saved just before the kill but not yet acknowledged completes on resume without its
    # usage (that attempt's count died with it): at most one call short
    assert llm_steps.total() - 1 <= state.usage.calls <= llm_steps.total() and state.usage.prompt_tokens > 0
    assert isinstance(state.output, dict) and state.output["final_decision"]
    assert len(state.output["debate"]) == 4 and len(state.output["risk_debate"]) == 6
