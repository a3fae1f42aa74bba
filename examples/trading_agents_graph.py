"""A LangGraph graph in TradingAgents' shape, to run under Tickertape as it is.

Analysts call tools in a loop (market data, indicators, fundamentals), a bull and a bear
researcher debate, a research manager decides, a trader proposes, an aggressive, a conservative
and a neutral risk analyst debate, and a portfolio manager gives the final decision. Nodes are
synchronous functions, as TradingAgents' are. The chat model is LangChain's OpenAI-compatible one:
point ``OPENAI_BASE_URL`` (and ``OPENAI_API_KEY``) at any OpenAI-compatible server.

    TT_PIPELINES=trading-agents=examples.trading_agents_graph:build_graph
"""

from __future__ import annotations

import math
import os
from typing import Annotated, Any, TypedDict

from langchain_core.messages import AnyMessage, HumanMessage, SystemMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.prebuilt import ToolNode


class AgentState(TypedDict, total=False):
    # filled in by Tickertape from the run's request (the keys it looks for)
    symbol: str
    model_id: str
    options: dict[str, Any]
    run_id: str
    # the agents' work
    market_messages: Annotated[list[AnyMessage], add_messages]
    fundamentals_messages: Annotated[list[AnyMessage], add_messages]
    market_report: str
    fundamentals_report: str
    debate: list[str]
    investment_plan: str
    trader_plan: str
    risk_debate: list[str]
    final_decision: str


# -- tools: deterministic stand-ins for a market-data vendor ---------------------------------------


def _closes(symbol: str, days: int = 60) -> list[float]:
    seed = sum(map(ord, symbol)) % 17
    return [round(100 + seed + 5 * math.sin(day / 7) + day * 0.1, 2) for day in range(days)]


@tool
def get_prices(symbol: str = "AAPL") -> str:
    """Daily closing prices of the last 60 trading days."""
    closes = _closes(symbol)
    return f"{symbol}: first {closes[0]}, last {closes[-1]}, high {max(closes)}, low {min(closes)}"


@tool
def get_indicators(symbol: str = "AAPL") -> str:
    """20-day moving average and momentum."""
    closes = _closes(symbol)
    sma = sum(closes[-20:]) / 20
    return f"{symbol}: SMA20 {sma:.2f}, momentum {closes[-1] - closes[-21]:+.2f}"


@tool
def get_fundamentals(symbol: str = "AAPL") -> str:
    """Valuation and growth figures."""
    return f"{symbol}: P/E 24.1, revenue growth 8%, margin 25%, debt/equity 1.4"


# -- nodes -----------------------------------------------------------------------------------------


def _llm(state: AgentState) -> ChatOpenAI:
    return ChatOpenAI(
        model=state.get("model_id") or "gpt-4o-mini",
        api_key=os.environ.get("OPENAI_API_KEY", "not-needed"),  # type: ignore[arg-type]
        max_retries=1,
        timeout=60,
    )


def _ask(state: AgentState, role: str, prompt: str) -> str:
    get_stream_writer()({"progress": 0.1, "message": f"{role} thinking"})
    answer = _llm(state).invoke([SystemMessage(f"[{role}] You are the {role}."), HumanMessage(prompt)])
    return str(answer.content)


def _analyst(role: str, key: str, tools: list[Any]) -> Any:
    def analyst(state: AgentState) -> dict[str, Any]:
        history: list[AnyMessage] = list(state.get(f"{key}_messages", []))  # type: ignore[call-overload]
        opening: list[AnyMessage] = [
            SystemMessage(f"[{role}] You are the {role}. Use the tools, then write a report."),
            HumanMessage(f"Analyse {state.get('symbol', 'AAPL')}."),
        ]
        fresh = [] if history else opening
        get_stream_writer()({"progress": 0.2, "message": f"{role}: {len(history)} messages so far"})
        answer = _llm(state).bind_tools(tools).invoke([*history, *fresh])
        update: dict[str, Any] = {f"{key}_messages": [*fresh, answer]}
        if not getattr(answer, "tool_calls", None):
            update[f"{key}_report"] = str(answer.content)
        return update

    return analyst


def _wants_tools(key: str, then: str) -> Any:
    def route(state: AgentState) -> str:
        last = state[f"{key}_messages"][-1]  # type: ignore[literal-required]
        return f"{key}_tools" if getattr(last, "tool_calls", None) else then

    return route


def _rounds(state: AgentState) -> int:
    return int((state.get("options") or {}).get("debate_rounds", 1))


def bull_researcher(state: AgentState) -> dict[str, Any]:
    turn = _ask(state, "bull researcher", f"Argue for buying. Reports: {state.get('market_report')}")
    return {"debate": [*state.get("debate", []), f"bull: {turn}"]}


def bear_researcher(state: AgentState) -> dict[str, Any]:
    turn = _ask(state, "bear researcher", f"Argue against. Debate so far: {state.get('debate')}")
    return {"debate": [*state.get("debate", []), f"bear: {turn}"]}


def after_debate(state: AgentState) -> str:
    turns = len(state.get("debate", []))
    if turns >= 2 * _rounds(state):
        return "research_manager"
    return "bear_researcher" if turns % 2 else "bull_researcher"


def research_manager(state: AgentState) -> dict[str, Any]:
    return {"investment_plan": _ask(state, "research manager", f"Judge the debate: {state.get('debate')}")}


def trader(state: AgentState) -> dict[str, Any]:
    return {"trader_plan": _ask(state, "trader", f"Propose a trade for: {state.get('investment_plan')}")}


def _risk(role: str) -> Any:
    def risk_analyst(state: AgentState) -> dict[str, Any]:
        turn = _ask(state, f"{role} analyst", f"Weigh the risks of: {state.get('trader_plan')}")
        return {"risk_debate": [*state.get("risk_debate", []), f"{role}: {turn}"]}

    return risk_analyst


RISK_ORDER = ("aggressive", "conservative", "neutral")


def after_risk(state: AgentState) -> str:
    turns = len(state.get("risk_debate", []))
    if turns >= 3 * _rounds(state):
        return "portfolio_manager"
    return f"{RISK_ORDER[turns % 3]}_analyst"


def portfolio_manager(state: AgentState) -> dict[str, Any]:
    return {"final_decision": _ask(state, "portfolio manager", f"Decide: {state.get('risk_debate')}")}


def build_graph() -> StateGraph[AgentState]:
    """The graph, not compiled: Tickertape compiles it with its own checkpointer."""
    graph = StateGraph(AgentState)
    graph.add_node("market_analyst", _analyst("market analyst", "market", [get_prices, get_indicators]))
    graph.add_node("market_tools", ToolNode([get_prices, get_indicators], messages_key="market_messages"))
    fundamentals = _analyst("fundamentals analyst", "fundamentals", [get_fundamentals])
    graph.add_node("fundamentals_analyst", fundamentals)
    graph.add_node("fundamentals_tools", ToolNode([get_fundamentals], messages_key="fundamentals_messages"))
    for name, node in (
        ("bull_researcher", bull_researcher),
        ("bear_researcher", bear_researcher),
        ("research_manager", research_manager),
        ("trader", trader),
        *((f"{role}_analyst", _risk(role)) for role in RISK_ORDER),
        ("portfolio_manager", portfolio_manager),
    ):
        graph.add_node(name, node)
    graph.add_edge(START, "market_analyst")
    graph.add_conditional_edges("market_analyst", _wants_tools("market", "fundamentals_analyst"))
    graph.add_edge("market_tools", "market_analyst")
    graph.add_conditional_edges("fundamentals_analyst", _wants_tools("fundamentals", "bull_researcher"))
    graph.add_edge("fundamentals_tools", "fundamentals_analyst")
    graph.add_conditional_edges("bull_researcher", after_debate)
    graph.add_conditional_edges("bear_researcher", after_debate)
    graph.add_edge("research_manager", "trader")
    graph.add_edge("trader", "aggressive_analyst")
    for role in RISK_ORDER:
        graph.add_conditional_edges(f"{role}_analyst", after_risk)
    graph.add_edge("portfolio_manager", END)
    return graph
