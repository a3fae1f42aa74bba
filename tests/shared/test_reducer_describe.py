"""What the fold shows a user of each step's result (the step's message), and the progress bar
of a step reporting past its end or several steps completed: exact values, through the fold's
public output (``fold`` folds in place, ``apply`` copies; both are checked)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from shared.events import AnyEvent, RunRequested, RunStarted, StepCompleted, StepProgress, StepStarted
from shared.reducer import RunState, apply, fold, initial
from shared.results import (
    AnalystReport,
    Assessment,
    Debate,
    JsonOutput,
    MarketData,
    PriceSeries,
    RiskDebate,
    StepOutput,
    TradeProposal,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
STEPS = ("data_collection", "analyst:market", "final_assessment")
BARS = PriceSeries(
    dates=["d1", "d2", "d3"], open=[1.0] * 3, high=[1.0] * 3, low=[1.0] * 3, close=[1.0] * 3, volume=[0.0] * 3
)
REPORT = AnalystReport(
    analyst="market", title="t", signal="bullish", score=0.5, summary="momentum up", report="r"
)
LONG = "x" * 250


def _both(*tail: AnyEvent) -> RunState:
    """The run after ``tail``, folded in place and applied event by event (they must agree)."""
    head: list[AnyEvent] = [
        RunRequested(run_id="r", at=T0, user_id="u", symbol="AAPL", model_id="m", analysts=("market",)),
        RunStarted(run_id="r", at=T0, runner_id="w1", attempt=1, steps=STEPS),
        StepStarted(run_id="r", at=T0, step=STEPS[0], index=0),
    ]
    entries = [(f"{i + 1}-0", e) for i, e in enumerate([*head, *tail])]
    folded = fold("r", entries)
    applied = initial("r")
    for entry_id, event in entries:
        applied = apply(applied, event, entry_id)
    assert applied == folded
    return folded


@pytest.mark.parametrize(
    ("output", "shown"),
    [
        (None, ""),
        (MarketData(symbol="AAPL", provider="yahoo", demo=False, prices=BARS), "3 daily bars from yahoo"),
        (
            MarketData(symbol="AAPL", provider="demo", demo=True, prices=BARS),
            "3 daily bars from demo (demo data)",
        ),
        (
            MarketData(symbol="ZZZZ", provider="demo", demo=True, listed=False, prices=BARS),
            "3 daily bars from demo (demo data, no real market)",
        ),
        (REPORT, "momentum up"),
        (Debate(turns=[], summary="bulls win", lean="bullish"), "bulls win"),
        (
            TradeProposal(action="BUY", entry=101.456, stop=95.0, position_pct=5.0, rationale="r"),
            "BUY at 101.46",
        ),
        (
            RiskDebate(turns=[], summary="s", prevailing="aggressive", position_pct=12.34),
            "the aggressive voice prevails, position 12.3%",
        ),
        (RiskDebate(turns=[], summary="s"), "the neutral voice prevails"),
        (
            Assessment(
                decision="SELL",
                rating="Underweight",
                confidence=0.724,
                horizon="3m",
                rationale="r",
                key_risks=[],
            ),
            "SELL (Underweight, confidence 72%)",
        ),
        (JsonOutput(value="plain text"), "plain text"),
        (JsonOutput(value={"close": [1.5]}), '{"close":[1.5]}'),
        (JsonOutput(value="y" * 200), "y" * 200),
        (JsonOutput(value="z" * 201), "z" * 199 + "…"),
        (JsonOutput(value=LONG), "x" * 199 + "…"),
    ],
)
def test_a_completed_steps_message_describes_its_result(output: StepOutput | None, shown: str) -> None:
    state = _both(StepCompleted(run_id="r", at=T0, step=STEPS[0], output=output))
    assert state.steps[0].message == shown


def test_a_steps_progress_is_clamped_to_its_end_and_each_completed_step_counts_once() -> None:
    """A step reporting past 1 counts as one step; two completed steps count as two."""
    first_done: list[AnyEvent] = [
        StepCompleted(run_id="r", at=T0, step=STEPS[0]),
        StepStarted(run_id="r", at=T0, step=STEPS[1], index=1),
    ]
    over = _both(*first_done, StepProgress(run_id="r", at=T0, step=STEPS[1], progress=1.5))
    assert (over.steps[1].progress, over.progress) == (1.0, 66.7)  # (1 + 1) of 3 steps
    under = _both(*first_done, StepProgress(run_id="r", at=T0, step=STEPS[1], progress=-0.5))
    assert (under.steps[1].progress, under.progress) == (0.0, 33.3)
    two = _both(*first_done, StepCompleted(run_id="r", at=T0, step=STEPS[1]))
    assert two.progress == 66.7
