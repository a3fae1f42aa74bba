"""Analysts' tools for real models: the data and indicator functions as OpenAI-style tools.

With a model that takes tools, an analyst decides what to call (at most ``max_tool_calls``);
every call and its result is kept on the report as evidence, and the report's numbers are meant
to come from those results. A model that cannot take tools (``tools = false`` in the registry,
or a server that rejects them) gets today's evidence-in-prompt request instead.
"""

from __future__ import annotations

import functools
import re
from typing import Any

import msgspec

from services.runner.pipeline.base import PipelineError
from services.runner.pipeline.evidence import of
from services.runner.pipeline.llm import ChatRequest, Message
from services.runner.pipeline.metering import MeteredModel
from shared.results import MarketData, ToolUse

TOOL_OF = {
    "market": ("technical_indicators", "SMA20/50/200, EMA12/26, RSI(14), MACD, volume trend, 3-month return"),
    "fundamentals": ("fundamentals", "P/E, P/B, revenue growth, margin, debt to equity, dividend yield"),
    "news": ("headlines", "recent headlines with their tone, counts of positive and negative ones"),
    "sentiment": ("crowd_sentiment", "5-day and 1-month returns, share of up days, volume surge, tone"),
    "risk": ("risk_metrics", "annualised volatility, maximum drawdown, beta, one-day 95% VaR"),
    "invest": ("long_term_metrics", "1-year return, Sharpe ratio, distance from the 52-week high, P/E"),
}
PRICE_TOOL = "price_history"
MAX_DAYS = 60


def _function(name: str, description: str, parameters: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {"name": name, "description": description, "parameters": parameters},
    }


def specs(analyst: str) -> list[dict[str, Any]]:
    """The analyst's own measures, and the recent closes every analyst may look at."""
    name, description = TOOL_OF[analyst]
    days = {"type": "integer", "minimum": 1, "maximum": MAX_DAYS, "description": "trading days"}
    return [
        _function(
            name,
            f"Computed {description}, with findings and their weights.",
            {"type": "object", "properties": {}},
        ),
        _function(
            PRICE_TOOL, "Recent daily closes (date, close).", {"type": "object", "properties": {"days": days}}
        ),
    ]


def call(data: MarketData, name: str, arguments: str) -> dict[str, Any]:
    """Run one tool on the collected data; a bad call gets an error the model can read."""
    by_name = {tool: analyst for analyst, (tool, _) in TOOL_OF.items()}
    if name in by_name:
        evidence = of(by_name[name], data)
        return {"numbers": evidence.numbers, "findings": [[f.text, f.weight] for f in evidence.findings]}
    if name == PRICE_TOOL:
        try:
            days = int(msgspec.json.decode(arguments or "{}").get("days", 20))
        except (msgspec.DecodeError, AttributeError, TypeError, ValueError):
            return {"error": 'arguments must be a JSON object like {"days": 20}'}
        days = max(1, min(MAX_DAYS, days))
        return {"dates": data.prices.dates[-days:], "close": data.prices.close[-days:]}
    return {"error": f"unknown tool {name!r}"}


def request(name: str, symbol: str, analyst: str, limit: int, rules: Message) -> ChatRequest:
    user = (
        f"Write the {name.lower()}'s report on {symbol}. Call the tools for the data you need "
        f"(at most {limit} calls), then answer. Use only numbers from the tool results and cite them "
        "by name. First line: a one-sentence summary; then the reasoning."
    )
    return ChatRequest(
        task=f"analyst:{analyst}",
        messages=[rules, Message("user", user)],
        tools=specs(analyst),
        max_tokens=600,
    )


async def analyse(
    model: MeteredModel, ask: ChatRequest, data: MarketData, limit: int
) -> tuple[str, list[ToolUse]] | None:
    """The report written with tools, and the calls made; None when the server rejects tools."""
    messages, uses = list(ask.messages), list[ToolUse]()
    while len(uses) < limit:
        try:
            done = await model.complete(msgspec.structs.replace(ask, messages=messages))
        except PipelineError as exc:
            if exc.code == "llm_rejected" and not uses:
                return None  # a server without tool support: the evidence-in-prompt path
            raise
        if not done.tool_calls:
            return done.text.strip(), uses
        messages.append(Message("assistant", done.text, tool_calls=done.tool_calls))
        for tool_call in done.tool_calls:
            messages.append(_answer(tool_call, data, uses, limit))
    closing = Message("user", "The tool budget is spent: write the report now from the results above.")
    final = await model.complete(msgspec.structs.replace(ask, messages=[*messages, closing], tools=[]))
    return final.text.strip(), uses


def _answer(tool_call: dict[str, Any], data: MarketData, uses: list[ToolUse], limit: int) -> Message:
    """Every call gets a tool message (the API requires it); those past the limit are refused."""
    function = tool_call.get("function") or {}
    name, arguments = str(function.get("name", "")), str(function.get("arguments") or "{}")
    if len(uses) >= limit:
        result: dict[str, Any] = {"error": "tool call limit reached"}
    else:
        result = call(data, name, arguments)
        uses.append(ToolUse(name=name, arguments=arguments, result=msgspec.json.encode(result).decode()))
    content = msgspec.json.encode(result).decode()
    return Message("tool", content, tool_call_id=str(tool_call.get("id", "")))


NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")


def _forms(value: float) -> set[str]:
    """How a tool's number may be written: as is, or as a percentage, at 0-2 decimals."""
    out = set()
    for scaled in (value, value * 100):
        for digits in (0, 1, 2):
            out.add(f"{abs(scaled):.{digits}f}")
    return out


@functools.lru_cache(maxsize=64)
def _sourced(result: str) -> frozenset[str]:
    """Every written form of a tool result's numbers (the runs on one symbol and day get the same
    results, so each is worked out once)."""
    return frozenset(form for token in NUMBER.findall(result) for form in _forms(float(token)))


def unsourced(text: str, uses: list[ToolUse]) -> list[str]:
    """Numbers in ``text`` that no tool result holds (small counts like "3 calls" aside): the
    report is kept, and these are shown beside it rather than trusted."""
    known: set[str] = set()
    for use in uses:
        known |= _sourced(use.result)
    found = [t for t in NUMBER.findall(text) if "." in t or abs(float(t)) > 31]
    return [t for t in dict.fromkeys(found) if t.lstrip("+-") not in known]
