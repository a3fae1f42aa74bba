"""Small LangGraph graphs the adapter tests run; node executions are counted in a dict."""

from __future__ import annotations

import operator
import threading
import time
from collections import Counter
from typing import Annotated, Any, TypedDict

from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph

RUNS: Counter[str] = Counter()
"""How often each node really executed (in this process)."""
FAIL_ONCE: set[str] = set()
"""Nodes that raise on their next execution (then run normally): a crash stand-in in-process."""
RELEASE = threading.Event()


class LoopState(TypedDict, total=False):
    symbol: str
    run_id: str
    rounds: int
    log: Annotated[list[str], operator.add]


def _node(name: str) -> Any:
    def node(state: LoopState) -> dict[str, Any]:
        RUNS[name] += 1
        if name in FAIL_ONCE:
            FAIL_ONCE.discard(name)
            raise RuntimeError(f"{name} crashed")
        get_stream_writer()({"progress": 0.5, "message": f"{name} halfway"})
        update: dict[str, Any] = {"log": [f"{name}:{state.get('symbol', '?')}"]}
        if name == "debate":
            update["rounds"] = state.get("rounds", 0) + 1
        return update

    return node


def loop_graph() -> StateGraph[LoopState]:
    """start → analyst → debate three times (a loop) → decide."""
    graph = StateGraph(LoopState)
    for name in ("analyst", "debate", "decide"):
        graph.add_node(name, _node(name))
    graph.add_edge(START, "analyst")
    graph.add_edge("analyst", "debate")
    graph.add_conditional_edges("debate", lambda s: "debate" if s.get("rounds", 0) < 3 else "decide")
    graph.add_edge("decide", END)
    return graph


def sleepy_graph() -> StateGraph[LoopState]:
    """One synchronous node that blocks its thread for 30 s (as TradingAgents' nodes block)."""

    def sleepy(state: LoopState) -> dict[str, Any]:
        RUNS["sleepy"] += 1
        RELEASE.wait(30)
        time.sleep(0)
        return {"log": ["slept"]}

    graph = StateGraph(LoopState)
    graph.add_node("sleepy", sleepy)
    graph.add_edge(START, "sleepy")
    graph.add_edge("sleepy", END)
    return graph
