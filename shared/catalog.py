"""What a run can ask for: analysts, steps, and the plan of steps a request implies."""

from __future__ import annotations

from typing import Literal, get_args

import msgspec

DataProvider = Literal["synthetic", "csv", "yfinance"]
"""Where a run's market data comes from (the runner's providers; a request may pick one)."""
DATA_PROVIDERS: tuple[str, ...] = get_args(DataProvider)


class Analyst(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str
    description: str


ANALYSTS: tuple[Analyst, ...] = (
    Analyst(
        id="market",
        name="Market analyst",
        description="Technicals: trend, moving averages, RSI, MACD and volume.",
    ),
    Analyst(
        id="fundamentals",
        name="Fundamentals analyst",
        description="Valuation, growth, margins and balance-sheet health.",
    ),
    Analyst(
        id="news",
        name="News analyst",
        description="Recent headlines and what they imply for the company.",
    ),
    Analyst(
        id="sentiment",
        name="Sentiment analyst",
        description="Crowd mood from price action, volume surges and headline tone.",
    ),
    Analyst(
        id="risk",
        name="Risk analyst",
        description="Volatility, maximum drawdown, beta and value at risk.",
    ),
    Analyst(
        id="invest",
        name="Investment analyst",
        description="The long-term investment thesis: returns, momentum and value.",
    ),
)
ANALYST_IDS: tuple[str, ...] = tuple(a.id for a in ANALYSTS)

DATA_STEP = "data_collection"
DEBATE_STEP = "research_debate"
TRADER_STEP = "trader"
FINAL_STEP = "final_assessment"
ANALYST_STEP_PREFIX = "analyst:"

PIPELINE_FULL = "full"
PIPELINE_NOOP = "noop"
"""A run with no steps at all: measures the queue, not the analysis."""
PIPELINES = (PIPELINE_FULL, PIPELINE_NOOP)


def analyst_step(analyst_id: str) -> str:
    return f"{ANALYST_STEP_PREFIX}{analyst_id}"


def plan_steps(analysts: tuple[str, ...], pipeline: str = PIPELINE_FULL) -> tuple[str, ...]:
    """The ordered steps a run executes; known before it starts so progress is honest."""
    if pipeline == PIPELINE_NOOP:
        return ()
    return (DATA_STEP, *(analyst_step(a) for a in analysts), DEBATE_STEP, TRADER_STEP, FINAL_STEP)


def step_label(step: str) -> str:
    """A human name for a step id."""
    if step.startswith(ANALYST_STEP_PREFIX):
        aid = step.removeprefix(ANALYST_STEP_PREFIX)
        return next((a.name for a in ANALYSTS if a.id == aid), aid)
    return step.replace("_", " ").capitalize()
