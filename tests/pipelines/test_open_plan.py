"""The fold of a run whose steps appear as it runs (a graph): honest progress, steps kept on resume."""

from __future__ import annotations

from shared.events import AnyEvent, RunCompleted, RunRequested, RunStarted, StepCompleted, StepStarted
from shared.reducer import fold
from shared.results import JsonOutput


def _events() -> list[AnyEvent]:
    return [
        RunRequested(run_id="g", user_id="u", symbol="AAPL", model_id="m", analysts=(), pipeline="graph"),
        RunStarted(run_id="g", runner_id="a", attempt=1, steps=()),
        StepStarted(run_id="g", step="analyst", index=0),
        StepCompleted(run_id="g", step="analyst", output=JsonOutput(value={"report": "up"})),
        StepStarted(run_id="g", step="debate", index=1),
        StepCompleted(run_id="g", step="debate", output=JsonOutput(value="bull wins")),
    ]


def _entries(events: list[AnyEvent]) -> list[tuple[str, AnyEvent]]:
    return [(f"{i + 1}-0", e) for i, e in enumerate(events)]


def test_steps_appear_as_they_run_and_progress_stays_below_100_until_the_end() -> None:
    state = fold("g", _entries(_events()))
    assert [s.name for s in state.steps] == ["analyst", "debate"]
    assert state.status == "running" and state.progress < 100.0
    assert state.steps[1].message == "bull wins" and state.steps[0].message == '{"report":"up"}'
    done = fold("g", _entries([*_events(), RunCompleted(run_id="g", output={"decision": "BUY"})]))
    assert done.progress == 100.0 and done.output == {"decision": "BUY"} and done.result is None


def test_a_resumed_attempt_keeps_the_steps_earlier_attempts_reported() -> None:
    resumed = [*_events(), RunStarted(run_id="g", runner_id="b", attempt=2, steps=())]
    state = fold("g", _entries(resumed))
    assert [(s.name, s.status) for s in state.steps] == [("analyst", "completed"), ("debate", "completed")]


def test_a_registered_pipeline_is_timed_apart_from_the_built_in_one() -> None:
    from services.runner.eta import config_of

    trading = RunRequested(run_id="a", user_id="u", symbol="X", model_id="m", analysts=("market",))
    graph = RunRequested(
        run_id="b", user_id="u", symbol="X", model_id="m", analysts=("market",), pipeline="g"
    )
    assert config_of(trading) == "full|m|market|1" and config_of(graph) == "g:full|m|market|1"
