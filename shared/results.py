"""What pipeline steps produce; carried inside StepCompleted and RunCompleted.

Schemas only grow: new fields get defaults, nothing is renamed (see tests/shared/fixtures).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import msgspec

Decision = Literal["BUY", "SELL", "HOLD"]
Rating = Literal["Buy", "Overweight", "Hold", "Underweight", "Sell"]
Signal = Literal["bullish", "bearish", "neutral"]


class Usage(msgspec.Struct, frozen=True, kw_only=True):
    """LLM calls counted for a step or a run."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            calls=self.calls + other.calls,
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            cost_usd=round(self.cost_usd + other.cost_usd, 6),
        )

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class PriceSeries(msgspec.Struct, frozen=True, kw_only=True):
    """Daily OHLCV bars, column by column (compact in JSON)."""

    dates: list[str]
    open: list[float]
    high: list[float]
    low: list[float]
    close: list[float]
    volume: list[float]


class Fundamentals(msgspec.Struct, frozen=True, kw_only=True):
    pe_ratio: float | None = None
    pb_ratio: float | None = None
    revenue_growth: float | None = None
    profit_margin: float | None = None
    debt_to_equity: float | None = None
    dividend_yield: float | None = None
    market_cap: float | None = None


class Headline(msgspec.Struct, frozen=True, kw_only=True):
    date: str
    title: str
    source: str = ""
    sentiment: float = 0.0


class MarketData(msgspec.Struct, frozen=True, kw_only=True, tag="data", weakref=True):
    """Data collection's output: everything later steps analyse (so a resume needs no refetch).

    Weak-referenceable: the runner memoises the evidence computed from one (until it is gone)."""

    symbol: str
    provider: str
    demo: bool
    prices: PriceSeries
    listed: bool = True
    """False when demo data was made up for a symbol with no real market behind it."""
    fundamentals: Fundamentals | None = None
    headlines: list[Headline] = []
    benchmark: PriceSeries | None = None


class ToolUse(msgspec.Struct, frozen=True, kw_only=True):
    """One tool call an analyst made with a real model, and what it returned (kept as evidence)."""

    name: str
    arguments: str
    result: str


class AnalystReport(msgspec.Struct, frozen=True, kw_only=True, tag="analyst"):
    analyst: str
    title: str
    signal: Signal
    score: float
    """-1 (strongly bearish) … +1 (strongly bullish)."""
    summary: str
    report: str
    evidence: dict[str, float | str | None] = {}
    tool_calls: list[ToolUse] = []
    unsourced: list[str] = []
    """Numbers a tool-using report cites that no tool result holds (shown, not trusted)."""


class DebateTurn(msgspec.Struct, frozen=True, kw_only=True):
    side: Literal["bull", "bear"]
    round: int
    argument: str


class Debate(msgspec.Struct, frozen=True, kw_only=True, tag="debate"):
    turns: list[DebateTurn]
    summary: str
    lean: Signal


Stance = Literal["aggressive", "conservative", "neutral"]


class RiskTurn(msgspec.Struct, frozen=True, kw_only=True):
    stance: Stance
    round: int
    argument: str
    position_pct: float | None = None
    """The size this voice argues for (percent of the portfolio)."""


class RiskDebate(msgspec.Struct, frozen=True, kw_only=True, tag="risk"):
    """The risk team's debate over the trader's proposal, and the size it settles on."""

    turns: list[RiskTurn]
    summary: str
    prevailing: Stance = "neutral"
    position_pct: float | None = None


class TradeProposal(msgspec.Struct, frozen=True, kw_only=True, tag="trader"):
    action: Decision
    entry: float
    stop: float
    target: float | None = None
    position_pct: float
    rationale: str


class Assessment(msgspec.Struct, frozen=True, kw_only=True, tag="assessment"):
    decision: Decision
    rating: Rating
    confidence: float
    horizon: str
    rationale: str
    key_risks: list[str]
    price_target: float | None = None
    horizon_days: int | None = None
    """Calendar days the call is for (what an outcome is measured over)."""
    position_pct: float | None = None
    """The portfolio manager's final size, after the risk debate."""
    memory: list[PastCall] = []
    """The earlier calls on the symbol the portfolio manager was shown, with their outcomes."""


class PastCall(msgspec.Struct, frozen=True, kw_only=True):
    """An earlier decision on the same symbol and what the price did since (the desk's memory)."""

    run_id: str
    date: str
    decision: Decision
    rating: Rating
    price: float
    price_target: float | None = None
    horizon_days: int = 91
    realised_return: float | None = None
    """Close at the horizon's end (or the latest close before it) over the decision's close."""
    horizon_ended: bool = False
    hit: bool | None = None
    """Whether the price went the call's way; None while there is no later close."""
    demo: bool = False


class Outcome(msgspec.Struct, frozen=True, kw_only=True):
    """What the price did after a run's call, as a later run on the symbol measured it."""

    realised_return: float
    """The close at the horizon's end (or the latest close before it) over the decision's close, - 1."""
    correct: bool | None
    """Whether the price went the call's way; None when that cannot be said yet."""
    horizon_days: int
    demo: bool
    """Measured on demo (synthetic) prices: an illustration, not a track record."""
    horizon_ended: bool = False
    """False: the horizon has not passed yet, the figure is the return so far."""
    observed_at: datetime | None = None
    """When the later run that measured it completed."""


class JsonOutput(msgspec.Struct, frozen=True, kw_only=True, tag="json"):
    """A step output of a pipeline that is not the built-in one: any JSON value, shown as is."""

    value: Any = None
    task: str | None = None
    """The LangGraph task that produced it: a resumed graph run tells acknowledged nodes by it."""


StepOutput = MarketData | AnalystReport | Debate | TradeProposal | RiskDebate | Assessment | JsonOutput


class ChartData(msgspec.Struct, frozen=True, kw_only=True):
    """What the UI draws: closes over the analysed period."""

    dates: list[str]
    close: list[float]


class RunResult(msgspec.Struct, frozen=True, kw_only=True):
    """The final answer of a run, as the user sees it."""

    symbol: str
    decision: Decision
    rating: Rating
    confidence: float
    horizon: str
    rationale: str
    key_risks: list[str]
    reports: list[AnalystReport]
    debate: Debate | None = None
    trade: TradeProposal | None = None
    provider: str = "synthetic"
    demo: bool = True
    last_close: float | None = None
    chart: ChartData | None = None
    risk_debate: RiskDebate | None = None
    price_target: float | None = None
    horizon_days: int | None = None
    position_pct: float | None = None
    memory: list[PastCall] = []
    data_note: str | None = None
    """What the data is, said to the reader when it is not real market data (None when it is)."""


NO_MARKET = "no real market: illustration only"


def data_note(provider: str, demo: bool, listed: bool = True) -> str | None:
    """The label every demo run carries, in the result, the page and the CLI."""
    if not demo:
        return None
    note = f"Demo data: {provider} prices generated for illustration, not real market data"
    return f"{note}; {NO_MARKET}." if not listed else f"{note}."
