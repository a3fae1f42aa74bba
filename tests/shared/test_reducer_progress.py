"""The fold's live view of a running run: start and resume, cancel requested, progress and ETA —
pinned to exact values (mutation testing found them unpinned)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from shared.events import (
    AnyEvent,
    RunCancelled,
    RunRequested,
    RunStarted,
    StepCompleted,
    StepProgress,
    StepStarted,
)
from shared.reducer import fold
from shared.run_state import RunState

T0 = datetime(2026, 1, 1, tzinfo=UTC)
STEPS = ("data_collection", "analyst:market", "final_assessment")


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def _fold(*tail: AnyEvent, expected_s: float | None = None) -> RunState:
    """Started at 10 s (queue wait 2.5 s), first step done, second a third through at 17 s."""
    head: list[AnyEvent] = [
        RunRequested(run_id="r", at=at(0), user_id="u", symbol="AAPL", model_id="m", analysts=("market",)),
        RunStarted(
            run_id="r",
            at=at(10),
            runner_id="w1",
            attempt=1,
            steps=STEPS,
            queue_wait_s=2.5,
            expected_s=expected_s,
        ),
        StepStarted(run_id="r", at=at(11), step=STEPS[0], index=0),
        StepCompleted(run_id="r", at=at(12), step=STEPS[0], duration_s=1.0),
        StepStarted(run_id="r", at=at(13), step=STEPS[1], index=1),
        StepProgress(run_id="r", at=at(17), step=STEPS[1], progress=1 / 3, message="a third"),
    ]
    return fold("r", [(f"{i + 1}-0", e) for i, e in enumerate([*head, *tail])])


def test_progress_and_eta_from_the_steps_and_the_elapsed_time() -> None:
    """Kills ``_derive_progress`` mutants: the fraction, its rounding and both ETA formulas."""
    state = _fold()
    assert (state.status, state.message, state.current_step) == ("running", "a third", STEPS[1])
    assert state.progress == 44.4  # (1 + 1/3) of 3 steps
    assert state.eta_s == 8.8  # 7 s for 4/9 of the work: 8.75 s to go
    assert _fold(expected_s=20.0).eta_s == 13.0  # the expected 20 s less the 7 elapsed
    assert _fold(expected_s=8.0).eta_s == 1.1  # past the expectation: a quarter of what remains


def test_a_step_start_resets_its_progress() -> None:
    state = _fold(StepStarted(run_id="r", at=at(18), step=STEPS[1], index=1, attempt=2))
    step = state.steps[1]
    assert (step.status, step.progress, step.message, step.attempt) == ("running", 0.0, "", 2)
    assert state.progress == 33.3 and state.message == f"{step.label} started"


def test_a_resume_keeps_the_first_start_and_the_completed_steps() -> None:
    """Kills ``_started`` mutants: message per attempt, first queue wait kept, expected time."""
    assert _fold().message == "a third"
    first = fold("r", [(f"{i}-0", e) for i, e in enumerate(_events_to_start(), start=1)])
    assert (first.message, first.queue_wait_s, first.expected_s) == ("started", 2.5, 4.0)
    state = _fold(
        RunStarted(
            run_id="r", at=at(30), runner_id="w2", attempt=2, steps=STEPS, queue_wait_s=9.0, expected_s=6.0
        )
    )
    assert (state.message, state.attempt, state.runner_id) == ("resumed (attempt 2)", 2, "w2")
    assert (state.queue_wait_s, state.expected_s, state.started_at) == (2.5, 6.0, at(10))
    assert state.steps[0].status == "completed"


def _events_to_start() -> list[AnyEvent]:
    return [
        RunRequested(run_id="r", at=at(0), user_id="u", symbol="AAPL", model_id="m", analysts=("market",)),
        RunStarted(
            run_id="r", at=at(10), runner_id="w1", attempt=1, steps=STEPS, queue_wait_s=2.5, expected_s=4.0
        ),
    ]


def test_a_cancel_of_a_running_run_asks_and_waits_for_the_runner() -> None:
    """Kills ``_cancelled`` mutants: ``cancel_requested`` is what a runner taking the run over
    reads to stop it (services/runner/runs.py ``_execute``)."""
    state = _fold(RunCancelled(run_id="r", at=at(18), user_id="u", reason="stop"))
    assert (state.status, state.cancel_requested, state.message) == ("running", True, "cancelling")
    assert state.completed_at is None
