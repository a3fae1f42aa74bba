"""The reducer folds a run's life into its state."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from shared.catalog import analyst_step, plan_steps
from shared.events import (
    RunCancelled,
    RunCompleted,
    RunFailed,
    RunRequested,
    RunRetrying,
    RunStarted,
    StepCompleted,
    StepProgress,
    StepStarted,
)
from shared.reducer import apply, fold
from shared.run_state import initial

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def requested() -> RunRequested:
    return RunRequested(
        run_id="r",
        at=at(0),
        user_id="u",
        symbol="AAPL",
        model_id="offline",
        analysts=("market", "risk"),
    )


def test_plan_is_known_from_the_request() -> None:
    state = fold("r", [("1-0", requested())])
    assert [s.name for s in state.steps] == list(plan_steps(("market", "risk")))
    assert state.status == "pending" and state.progress == 0


def test_progress_counts_completed_steps_and_the_running_fraction() -> None:
    steps = plan_steps(("market", "risk"))
    events = [
        requested(),
        RunStarted(run_id="r", at=at(1), runner_id="w", attempt=1, steps=steps),
        StepStarted(run_id="r", at=at(1), step=steps[0], index=0),
        StepCompleted(run_id="r", at=at(3), step=steps[0], duration_s=2),
        StepStarted(run_id="r", at=at(3), step=steps[1], index=1),
        StepProgress(run_id="r", at=at(4), step=steps[1], progress=0.5, message="half"),
    ]
    state = fold("r", [(f"{i}-0", e) for i, e in enumerate(events, 1)])
    assert state.status == "running"
    assert state.current_step == analyst_step("market")
    assert state.progress == round(100 * 1.5 / len(steps), 1)
    assert state.eta_s is not None and state.eta_s > 0
    assert state.last_event_id == "6-0" and state.event_count == 6


def test_first_terminal_event_wins() -> None:
    events = [
        requested(),
        RunStarted(run_id="r", at=at(1), runner_id="w", attempt=1, steps=()),
        RunFailed(run_id="r", at=at(2), code="timeout", message="deadline", status="timeout"),
        RunCompleted(run_id="r", at=at(3)),
    ]
    state = fold("r", [(f"{i}-0", e) for i, e in enumerate(events, 1)])
    assert state.status == "timeout" and state.error is not None
    assert state.error.code == "timeout"
    assert state.last_event_id == "4-0"


def test_retry_returns_to_pending_and_cancel_then_ends_it() -> None:
    events = [
        requested(),
        RunStarted(run_id="r", at=at(1), runner_id="w", attempt=1, steps=()),
        RunRetrying(run_id="r", at=at(2), attempt=2, reason="released"),
        RunCancelled(run_id="r", at=at(3), user_id="u"),
    ]
    states = []
    state = initial("r")
    for i, e in enumerate(events, 1):
        state = apply(state, e, f"{i}-0")
        states.append(state.status)
    assert states == ["pending", "running", "pending", "cancelled"]


def test_apply_does_not_mutate_its_input() -> None:
    steps = plan_steps(("market",))
    s1 = fold(
        "r",
        [
            ("1-0", requested()),
            ("2-0", RunStarted(run_id="r", at=at(1), runner_id="w", attempt=1, steps=steps)),
        ],
    )
    s2 = apply(s1, StepStarted(run_id="r", at=at(2), step=steps[0], index=0), "3-0")
    assert s1.steps[0].status == "pending" and s2.steps[0].status == "running"
