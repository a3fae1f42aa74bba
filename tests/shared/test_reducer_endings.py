"""How the fold ends a run and hands it back to the queue, field by field: what the UI, the read
model and SSE all show comes from these (mutation testing found them unpinned)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from shared.events import (
    AnyEvent,
    RunCancellationConfirmed,
    RunCancelled,
    RunCompleted,
    RunFailed,
    RunRequested,
    RunRetrying,
    RunStarted,
    StepCompleted,
    StepStarted,
)
from shared.reducer import fold
from shared.results import RunResult, Usage
from shared.run_state import ErrorInfo, RunState

T0 = datetime(2026, 1, 1, tzinfo=UTC)
STEPS = ("data_collection", "analyst:market", "final_assessment")
STEP_USAGE = Usage(calls=1, prompt_tokens=10)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def _fold(*tail: AnyEvent) -> RunState:
    """A run started at 10 s that finished its first step and is in its second, then ``tail``."""
    head: list[AnyEvent] = [
        RunRequested(run_id="r", at=at(0), user_id="u", symbol="AAPL", model_id="m", analysts=("market",)),
        RunStarted(run_id="r", at=at(10), runner_id="w1", attempt=1, steps=STEPS),
        StepStarted(run_id="r", at=at(11), step=STEPS[0], index=0),
        StepCompleted(run_id="r", at=at(12), step=STEPS[0], duration_s=1.0, usage=STEP_USAGE),
        StepStarted(run_id="r", at=at(13), step=STEPS[1], index=1),
    ]
    return fold("r", [(f"{i + 1}-0", e) for i, e in enumerate([*head, *tail])])


def _statuses(state: RunState) -> list[str]:
    return [st.status for st in state.steps]


def _ended(state: RunState, status: str, end_s: float) -> None:
    assert (state.status, state.message, state.current_step) == (status, status, None)
    assert state.completed_at == at(end_s) and state.eta_s == 0.0
    assert state.duration_s == round(end_s - 10, 3)


def test_a_failure_ends_the_run_and_fails_its_running_step() -> None:
    """Kills ``_finish``/``_failed`` mutants: the status, times, message and step marks of an end."""
    state = _fold(RunFailed(run_id="r", at=at(20.25), code="boom", message="it broke", attempt=1))
    _ended(state, "failed", 20.25)
    assert _statuses(state) == ["completed", "failed", "pending"]
    assert state.error == ErrorInfo(code="boom", message="it broke")
    timeout = _fold(RunFailed(run_id="r", at=at(30), code="timeout", message="late", status="timeout"))
    assert timeout.status == "timeout" and _statuses(timeout)[1] == "failed"


def test_a_confirmed_cancel_ends_the_run_and_cancels_its_running_step() -> None:
    state = _fold(
        RunCancelled(run_id="r", at=at(14), user_id="u", reason="changed my mind"),
        RunCancellationConfirmed(run_id="r", at=at(15.5), reason="changed my mind"),
    )
    _ended(state, "cancelled", 15.5)
    assert _statuses(state) == ["completed", "cancelled", "pending"]
    assert state.error == ErrorInfo(code="cancelled", message="changed my mind")


def test_a_completion_completes_the_running_step_and_keeps_the_result() -> None:
    """Kills ``_completed`` mutants: the result, and the usage the runner reports at the end."""
    result = RunResult(
        symbol="AAPL", decision="BUY", rating="Buy", confidence=0.7, horizon="1 week",
        rationale="r", key_risks=[], reports=[],
    )  # fmt: skip
    usage = Usage(calls=4, prompt_tokens=40)
    state = _fold(RunCompleted(run_id="r", at=at(16), duration_s=6.0, result=result, usage=usage))
    _ended(state, "completed", 16)
    assert _statuses(state) == ["completed", "completed", "pending"] and state.progress == 100.0
    assert (state.result, state.usage) == (result, usage)
    assert (state.requested_at, state.steps[0].duration_s) == (at(0), 1.0)
    kept = _fold(RunCompleted(run_id="r", at=at(16), duration_s=6.0))  # no usage reported: the steps' sum
    assert kept.usage == STEP_USAGE and kept.result is None


def test_a_cancel_before_the_start_ends_the_run_at_once() -> None:
    request = RunRequested(run_id="r", at=at(0), user_id="u", symbol="AAPL", model_id="m", analysts=())
    state = fold(
        "r", [("1-0", request), ("2-0", RunCancelled(run_id="r", at=at(3), user_id="u", reason="no"))]
    )
    assert (state.status, state.message, state.completed_at, state.eta_s) == (
        "cancelled",
        "cancelled",
        at(3),
        0.0,
    )
    assert state.duration_s is None and state.error == ErrorInfo(code="cancelled", message="no")


def test_a_retry_hands_the_run_back_and_interrupts_its_running_step() -> None:
    """Kills ``_back_to_queue``/``_retrying`` mutants: status, attempt, runner and step marks."""
    failed = RunFailed(run_id="r", at=at(14), code="llm", message="503", attempt=1, will_retry=True)
    state = _fold(failed)
    assert (state.status, state.attempt, state.runner_id) == ("pending", 1, None)
    assert state.message == "waiting to resume: 503" and state.error == ErrorInfo(code="llm", message="503")
    assert [(st.status, st.message) for st in state.steps][1] == ("pending", "interrupted")
    assert state.steps[0].status == "completed" and state.completed_at is None
    released = _fold(RunRetrying(run_id="r", at=at(14), attempt=3, reason=""))
    assert (released.status, released.attempt, released.message) == ("pending", 2, "waiting to resume")
    assert _statuses(released) == ["completed", "pending", "pending"]
