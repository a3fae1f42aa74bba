"""The projector's in-place reducer path gives exactly the states of the pure ``fold``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.catalog import ANALYST_IDS, DATA_STEP, FINAL_STEP, analyst_step
from shared.events import (
    AnyEvent,
    RunCancellationConfirmed,
    RunCancelled,
    RunCompleted,
    RunFailed,
    RunOptions,
    RunRequested,
    RunRetrying,
    RunStarted,
    StepCompleted,
    StepProgress,
    StepStarted,
)
from shared.reducer import apply, apply_mut, fold
from shared.results import RunResult, Usage
from shared.run_state import RunState, initial

RUN = "run-1"
STEP_NAMES = (DATA_STEP, FINAL_STEP, "trader", analyst_step("market"), analyst_step("news"), "mystery")
T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)

RESULT = RunResult(
    symbol="AAPL",
    decision="BUY",
    rating="Buy",
    confidence=0.7,
    horizon="3m",
    rationale="r",
    key_risks=[],
    reports=[],
)
times = st.integers(0, 600_000).map(lambda ms: T0 + timedelta(milliseconds=ms))
steps = st.sampled_from(STEP_NAMES)
usages = st.builds(
    Usage,
    calls=st.integers(0, 3),
    prompt_tokens=st.integers(0, 500),
    completion_tokens=st.integers(0, 500),
    cost_usd=st.floats(0, 1, allow_nan=False),
)
analysts = st.lists(st.sampled_from(ANALYST_IDS), max_size=3, unique=True).map(tuple)
pipelines = st.sampled_from(("full", "noop"))

events: st.SearchStrategy[AnyEvent] = st.one_of(
    st.builds(
        RunRequested, run_id=st.just(RUN), at=times, user_id=st.just("u"), symbol=st.just("AAPL"),
        model_id=st.just("offline"), analysts=analysts, options=st.builds(RunOptions, pipeline=pipelines),
    ),
    st.builds(RunCancelled, run_id=st.just(RUN), at=times, user_id=st.just("u")),
    st.builds(
        RunStarted, run_id=st.just(RUN), at=times, runner_id=st.sampled_from(("r1", "r2")),
        attempt=st.integers(1, 3), steps=st.lists(steps, max_size=4, unique=True).map(tuple),
        queue_wait_s=st.floats(0, 5), expected_s=st.none() | st.floats(1, 100),
    ),
    st.builds(StepStarted, run_id=st.just(RUN), at=times, step=steps, index=st.integers(0, 5),
              attempt=st.integers(1, 3)),
    st.builds(StepProgress, run_id=st.just(RUN), at=times, step=steps, progress=st.floats(-0.5, 1.5),
              message=st.sampled_from(("", "half"))),
    st.builds(StepCompleted, run_id=st.just(RUN), at=times, step=steps, duration_s=st.floats(0, 9),
              usage=usages),
    st.builds(RunRetrying, run_id=st.just(RUN), at=times, attempt=st.integers(1, 4),
              reason=st.sampled_from(("", "lease lost"))),
    st.builds(RunCompleted, run_id=st.just(RUN), at=times, usage=usages,
              result=st.none() | st.just(RESULT)),
    st.builds(RunFailed, run_id=st.just(RUN), at=times, code=st.just("boom"), message=st.just("it broke"),
              attempt=st.integers(1, 3), will_retry=st.booleans(),
              status=st.sampled_from(("failed", "timeout"))),
    st.builds(RunCancellationConfirmed, run_id=st.just(RUN), at=times),
)  # fmt: skip

_encode = msgspec.json.Encoder().encode


def _entries(sequence: list[AnyEvent]) -> list[tuple[str, AnyEvent]]:
    return [(f"{1000 + i}-0", event) for i, event in enumerate(sequence)]


@settings(max_examples=300, deadline=None)
@given(sequence=st.lists(events, max_size=25), requested_first=st.booleans())
def test_apply_mut_equals_fold(sequence: list[AnyEvent], requested_first: bool) -> None:
    if requested_first:
        first = RunRequested(run_id=RUN, at=T0, user_id="u", symbol="MSFT", model_id="m", analysts=("risk",))
        sequence = [first, *sequence]
    entries = _entries(sequence)
    state = initial(RUN)
    for event_id, event in entries:
        apply_mut(state, event, event_id)
    expected = fold(RUN, entries)
    assert state == expected
    assert _encode(state) == _encode(expected)


@settings(max_examples=100, deadline=None)
@given(prefix=st.lists(events, max_size=15), last=events)
def test_apply_stays_pure(prefix: list[AnyEvent], last: AnyEvent) -> None:
    before: RunState = fold(RUN, _entries(prefix))
    encoded = _encode(before)
    after = apply(before, last, "9999-0")
    assert _encode(before) == encoded  # the input is untouched by the reference path
    mutated = msgspec.json.decode(encoded, type=RunState)
    apply_mut(mutated, last, "9999-0")
    assert mutated == after


class _LateProgress(StepProgress, frozen=True, kw_only=True):
    """A subclass of an event type (no new tag): the reducer treats it as its base type."""


@settings(max_examples=50, deadline=None)
@given(prefix=st.lists(events, max_size=15), progress=st.floats(-0.5, 1.5), step=steps)
def test_a_subclass_of_an_event_type_folds_as_its_base(
    prefix: list[AnyEvent], progress: float, step: str
) -> None:
    base = StepProgress(run_id=RUN, at=T0, step=step, progress=progress, message="late")
    sub = _LateProgress(run_id=RUN, at=T0, step=step, progress=progress, message="late")
    expected = fold(RUN, [*_entries(prefix), ("9999-0", base)])
    assert fold(RUN, [*_entries(prefix), ("9999-0", sub)]) == expected
    state = fold(RUN, _entries(prefix))
    apply_mut(state, sub, "9999-0")
    assert state == expected
