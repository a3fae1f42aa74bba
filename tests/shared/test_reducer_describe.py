"""What the fold shows a user beside the status: each step's result described (the step's
message), the progress bar, demo data, a run's duration, why it waits to resume, its webhook
deliveries and share links — exact values, through the fold's public output (``fold``/``apply``
copy, ``apply_mut`` folds in place; both are checked)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest

from shared.events import (
    AnyEvent,
    DeliveryOutcome,
    OutcomeMeasured,
    RunCompleted,
    RunFailed,
    RunRequested,
    RunRetrying,
    RunStarted,
    ShareCreated,
    ShareRevoked,
    StepCompleted,
    StepProgress,
    StepStarted,
    WebhookAttempted,
)
from shared.reducer import apply, apply_mut, fold
from shared.results import (
    AnalystReport,
    Assessment,
    Debate,
    JsonOutput,
    MarketData,
    Outcome,
    PriceSeries,
    RiskDebate,
    RunResult,
    StepOutput,
    TradeProposal,
)
from shared.run_state import DeliveryState, RunState, ShareState, initial

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
    """The run after ``tail``, by ``fold`` and in place by ``apply_mut`` (they must agree)."""
    head: list[AnyEvent] = [
        RunRequested(run_id="r", at=T0, user_id="u", symbol="AAPL", model_id="m", analysts=("market",)),
        RunStarted(run_id="r", at=T0, runner_id="w1", attempt=1, steps=STEPS),
        StepStarted(run_id="r", at=T0, step=STEPS[0], index=0),
    ]
    entries = [(f"{i + 1}-0", e) for i, e in enumerate([*head, *tail])]
    folded = fold("r", entries)
    in_place = initial("r")
    for entry_id, event in entries:
        apply_mut(in_place, event, entry_id)
    assert in_place == folded
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


def test_a_completed_step_is_whole_and_its_market_data_says_whether_the_run_is_on_demo_data() -> None:
    real = MarketData(symbol="AAPL", provider="yahoo", demo=False, prices=BARS)
    state = _both(StepCompleted(run_id="r", at=T0, step=STEPS[0], output=real))
    assert (state.steps[0].status, state.steps[0].progress, state.demo) == ("completed", 1.0, False)
    demo = MarketData(symbol="AAPL", provider="demo", demo=True, prices=BARS)
    assert _both(StepCompleted(run_id="r", at=T0, step=STEPS[0], output=demo)).demo is True


def test_a_completed_run_takes_demo_from_its_result_and_its_duration_to_the_millisecond() -> None:
    demo = MarketData(symbol="AAPL", provider="demo", demo=True, prices=BARS)
    result = RunResult(
        symbol="AAPL", decision="HOLD", rating="Hold", confidence=0.5, horizon="3m", rationale="r",
        key_risks=[], reports=[], provider="yahoo", demo=False,
    )  # fmt: skip
    later = T0 + timedelta(microseconds=1_234_568)
    steps: list[AnyEvent] = [StepCompleted(run_id="r", at=T0, step=STEPS[0], output=demo)]
    done = _both(*steps, RunCompleted(run_id="r", at=later, result=result))
    assert (done.status, done.demo, done.duration_s) == ("completed", False, 1.235)
    assert _both(*steps, RunCompleted(run_id="r", at=later)).demo is True  # no result: as before


def test_a_run_waiting_to_resume_says_why_and_keeps_the_attempt_that_failed() -> None:
    retrying = _both(RunRetrying(run_id="r", at=T0, attempt=2, reason="lease lost"))
    assert (retrying.status, retrying.message) == ("pending", "waiting to resume: lease lost")
    failed = _both(
        RunFailed(run_id="r", at=T0, code="llm", message="rate limited", attempt=2, will_retry=True)
    )
    assert (failed.status, failed.attempt, failed.message) == (
        "pending",
        2,
        "waiting to resume: rate limited",
    )


def test_a_resumed_run_keeps_the_steps_an_earlier_attempt_reported_beyond_the_new_plan() -> None:
    """A graph's steps appear as it runs: one completed by attempt 1 stays when attempt 2 starts."""
    state = _both(
        StepCompleted(run_id="r", at=T0, step=STEPS[0]),
        StepStarted(run_id="r", at=T0, step="graph:extra", index=3),
        StepCompleted(run_id="r", at=T0, step="graph:extra"),
        RunRetrying(run_id="r", at=T0, attempt=2),
        RunStarted(run_id="r", at=T0, runner_id="w2", attempt=2, steps=STEPS[:2]),
    )
    assert [(st.name, st.status) for st in state.steps] == [
        (STEPS[0], "completed"), (STEPS[1], "pending"), ("graph:extra", "completed"),
    ]  # fmt: skip


def _attempted(
    at: datetime, webhook_id: str, attempt: int, outcome: DeliveryOutcome, **fields: Any
) -> WebhookAttempted:
    return WebhookAttempted(
        run_id="r", at=at, webhook_id=webhook_id, event_type="run.completed", attempt=attempt,
        outcome=outcome, **fields,
    )  # fmt: skip


def test_webhook_deliveries_are_folded_after_the_end_one_per_webhook_id() -> None:
    t1, t2, t3 = (T0 + timedelta(seconds=k) for k in (1, 2, 3))
    ended: list[AnyEvent] = [RunCompleted(run_id="r", at=T0)]
    first = _attempted(t1, "w1", 1, "retrying", status_code=503, error="busy", next_attempt_at=t3)
    other = _attempted(t1, "w2", 1, "dead", endpoint="ops")
    second = _attempted(t2, "w1", 2, "delivered", status_code=200)
    late = _attempted(t3, "w1", 1, "delivered")
    before = _both(*ended, first, other)
    assert before.deliveries == [
        DeliveryState(webhook_id="w1", event_type="run.completed", status="retrying", attempts=1,
                      status_code=503, error="busy", last_attempt_at=t1, next_attempt_at=t3),
        DeliveryState(webhook_id="w2", event_type="run.completed", endpoint="ops", status="dead", attempts=1,
                      last_attempt_at=t1),
    ]  # fmt: skip
    after = apply(before, second, "9-0")
    assert before.deliveries[0].status == "retrying"  # apply leaves its input untouched
    assert after.deliveries[0] == DeliveryState(
        webhook_id="w1",
        event_type="run.completed",
        status="delivered",
        attempts=2,
        status_code=200,
        last_attempt_at=t2,
    )
    assert after.deliveries[1] == before.deliveries[1]
    assert apply(after, late, "10-0").deliveries[0].attempts == 2  # the most attempts seen


def test_share_links_are_recorded_and_a_revocation_keeps_its_first_time() -> None:
    t1, t2, t3 = (T0 + timedelta(seconds=k) for k in (1, 2, 3))
    state = _both(
        ShareCreated(run_id="r", at=t1, share_id="s1", user_id="u", token_sha256="h1", expires_at=t3),
        ShareCreated(run_id="r", at=t1, share_id="s2", user_id="u", token_sha256="h2"),
        ShareRevoked(run_id="r", at=t2, share_id="s1", user_id="u"),
        ShareRevoked(run_id="r", at=t3, share_id="s1", user_id="u"),
    )
    assert state.shares == [
        ShareState(share_id="s1", token_sha256="h1", created_at=t1, expires_at=t3, revoked_at=t2),
        ShareState(share_id="s2", token_sha256="h2", created_at=t1),
    ]


def test_a_graph_run_counts_one_step_more_and_an_event_the_fold_does_not_handle_changes_nothing() -> None:
    """A graph's next step is not known yet: its bar never shows 100 % early. An event with no
    handler (``OutcomeMeasured`` belongs to the projector's row) is only counted."""
    graph = RunRequested(
        run_id="g", at=T0, user_id="u", symbol="AAPL", model_id="m", analysts=(), pipeline="graph"
    )
    started = RunStarted(run_id="g", at=T0, runner_id="w1", attempt=1, steps=("a", "b"))
    done: list[AnyEvent] = [
        StepStarted(run_id="g", at=T0, step="a", index=0),
        StepCompleted(run_id="g", at=T0, step="a"),
    ]
    entries: list[tuple[str, AnyEvent]] = [(f"{i + 1}-0", e) for i, e in enumerate([graph, started, *done])]
    state = fold("g", entries)
    assert state.progress == 33.3  # 1 of 2 steps and the unknown next one
    outcome = Outcome(realised_return=0.1, correct=True, horizon_days=5, demo=False)
    measured = OutcomeMeasured(run_id="g", at=T0, user_id="u", outcome=outcome)
    after = fold("g", [*entries, ("9-0", measured)])
    assert (
        msgspec.structs.replace(after, event_count=state.event_count, last_event_id=state.last_event_id)
        == state
    )
    in_place = fold("g", entries)
    apply_mut(in_place, measured, "9-0")
    assert in_place == after
