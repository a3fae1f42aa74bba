"""What a run can ask for: analysts, steps, and the plan of steps a request implies."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Literal, get_args

import msgspec

if TYPE_CHECKING:
    from shared.events import RunRequested

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
RISK_STEP = "risk_debate"
FINAL_STEP = "final_assessment"
"""The portfolio manager's decision (the step id predates the risk debate and stays for old runs)."""
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
    analyst_steps = (analyst_step(a) for a in analysts)
    return (DATA_STEP, *analyst_steps, DEBATE_STEP, TRADER_STEP, RISK_STEP, FINAL_STEP)


TRADING = "trading"
"""The built-in pipeline's name; runs that name no pipeline run it."""
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


class PipelineSpecError(ValueError):
    """``TT_PIPELINES`` is malformed; the message names the entry."""


class PipelineInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A pipeline a run may name: the built-in one or one registered with ``TT_PIPELINES``."""

    name: str
    target: str
    """``module:attribute`` it is loaded from (the built-in one: ``builtin``)."""
    steps: tuple[str, ...] | None = None
    """The steps when known before a run starts; None when they appear as it runs (graphs)."""


def parse_pipelines(spec: str) -> dict[str, str]:
    """``name=module:attribute[,…]`` → {name: "module:attribute"}; fails naming the bad entry."""
    found: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, target = item.partition("=")
        name, target = name.strip(), target.strip()
        module, _, attr = target.partition(":")
        if not _NAME.match(name) or not module or not attr or name == TRADING or name in found:
            raise PipelineSpecError(
                f"TT_PIPELINES entry {item!r}: want name=module:attribute, a new lower-case name"
            )
        found[name] = target
    return found


def pipelines(registered: Mapping[str, str]) -> tuple[PipelineInfo, ...]:
    """Every pipeline a run may name, the built-in one first (with every analyst's steps)."""
    builtin = PipelineInfo(name=TRADING, target="builtin", steps=plan_steps(ANALYST_IDS))
    return (builtin, *(PipelineInfo(name=n, target=t) for n, t in registered.items()))


def planned_steps(request: RunRequested) -> tuple[str, ...]:
    """The steps a run is known to take before it starts (a graph's appear as it runs)."""
    if request.pipeline != TRADING:
        return ()
    return plan_steps(request.analysts, request.options.pipeline)


def has_steps(request: RunRequested) -> bool:
    """Whether the run does any work at all (a no-op trading run does not)."""
    return request.pipeline != TRADING or bool(plan_steps(request.analysts, request.options.pipeline))


STEP_LABELS = {
    DEBATE_STEP: "Bull/bear debate",
    TRADER_STEP: "Trader",
    RISK_STEP: "Risk debate",
    FINAL_STEP: "Portfolio manager",
}


def step_label(step: str) -> str:
    """A human name for a step id."""
    if step.startswith(ANALYST_STEP_PREFIX):
        aid = step.removeprefix(ANALYST_STEP_PREFIX)
        return next((a.name for a in ANALYSTS if a.id == aid), aid)
    if step in STEP_LABELS:
        return STEP_LABELS[step]
    return step.replace("_", " ").capitalize()
