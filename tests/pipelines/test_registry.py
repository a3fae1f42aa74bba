"""Registered pipelines run by a real worker on a real Redis: native SDK ones and unknown names."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from services.runner.settings import RunnerSettings
from shared.catalog import PipelineSpecError, parse_pipelines
from shared.config import ConfigError, Env
from shared.events import (
    RunCancellationConfirmed,
    RunCancelled,
    RunOptions,
    RunRequested,
    StepProgress,
    StepStarted,
)
from shared.ids import new_run_id
from shared.keys import Keys
from shared.results import JsonOutput, Usage
from shared.store import EventStore
from shared.submits import Submitted
from tests.runner.support import events_of, report, running_worker, wait_event, wait_state

NATIVE = "orchestrator=examples.orchestrator_pipeline:pipeline"


async def _submit(store: EventStore, pipeline: str, deadline_s: float | None = None) -> str:
    run_id = new_run_id()
    request = RunRequested(
        run_id=run_id, user_id="local", symbol="MSFT", model_id="offline", analysts=("market", "risk"),
        pipeline=pipeline, options=RunOptions(deadline_s=deadline_s),
    )  # fmt: skip
    assert isinstance(await store.submit(request), Submitted)
    return run_id


async def test_a_native_sdk_pipeline_runs_its_steps_and_ends_with_its_value(
    redis: Redis, redis_url: str, keys: Keys
) -> None:
    store = EventStore(redis, keys)
    async with running_worker(redis_url, TT_PIPELINES=NATIVE):
        run_id = await _submit(store, "orchestrator")
        state = await wait_state(store, run_id)
    assert state.status == "completed", state.error
    assert [s.name for s in state.steps] == ["fetch_prices", "analyse", "decide"]
    assert all(s.status == "completed" for s in state.steps) and state.progress == 100.0
    assert state.output == {
        "symbol": "MSFT",
        "views": {"market": "bullish", "risk": "bullish"},
        "decision": "BUY",
    }
    progress = [e for e in await events_of(store, run_id) if isinstance(e, StepProgress)]
    assert [(p.step, p.message) for p in progress] == [
        ("fetch_prices", "fetch_prices (1/3)"),
        ("decide", "decide (3/3)"),
    ]


async def test_a_resumed_native_pipeline_reuses_the_stored_outputs(redis: Redis) -> None:
    from examples.orchestrator_pipeline import pipeline
    from tests.pipelines.test_graph_adapter import Recorder

    request = RunRequested(run_id="r", user_id="u", symbol="MSFT", model_id="m", analysts=("market",))
    done = {"fetch_prices": JsonOutput(value=[10.0, 5.0])}  # a falling price an earlier attempt saw
    recorder = Recorder()
    result = await pipeline.run(request, done, recorder, spent=Usage())
    assert recorder.steps == ["analyse", "decide"]
    assert result.value["views"] == {"market": "bearish"}


async def test_a_run_naming_a_pipeline_this_runner_lacks_fails_naming_the_known_ones(
    redis: Redis, redis_url: str, keys: Keys
) -> None:
    store = EventStore(redis, keys)
    async with running_worker(redis_url, TT_PIPELINES=NATIVE):
        run_id = await _submit(store, "ghost")
        state = await wait_state(store, run_id)
    assert state.status == "failed" and state.error is not None
    assert state.error.code == "unknown_pipeline" and "orchestrator" in state.error.message


def test_a_malformed_tt_pipelines_fails_at_start_naming_the_entry() -> None:
    with pytest.raises(ConfigError, match="nomodule"):
        RunnerSettings.from_env(Env({"TT_PIPELINES": "good=a.b:c,nomodule"}))
    for bad in ("trading=a:b", "x=a:b,x=c:d", "Bad=a:b", "x=:b", "x=a:"):
        with pytest.raises(PipelineSpecError):
            parse_pipelines(bad)
    assert parse_pipelines(" a=m.n:g , b-2=x:y ") == {"a": "m.n:g", "b-2": "x:y"}


SLEEPY = "sleepy=tests.pipelines.graphs:sleepy_graph"


async def test_cancel_and_deadline_stop_a_graph_blocked_in_a_synchronous_node_within_a_second(
    redis: Redis, redis_url: str, keys: Keys
) -> None:
    from tests.pipelines import graphs

    store = EventStore(redis, keys)
    graphs.RELEASE.clear()
    try:
        async with running_worker(redis_url, TT_PIPELINES=SLEEPY):
            cancelled = await _submit(store, "sleepy")
            await wait_event(store, cancelled, lambda e: isinstance(e, StepStarted))
            await store.append(RunCancelled(run_id=cancelled, user_id="local"))
            state = await wait_state(store, cancelled)
            timed = await _submit(store, "sleepy", deadline_s=0.5)
            late = await wait_state(store, timed)
    finally:
        graphs.RELEASE.set()  # the abandoned threads end now
    confirmed = [e for e in await events_of(store, cancelled) if isinstance(e, RunCancellationConfirmed)]
    assert state.status == "cancelled" and confirmed[0].latency_ms is not None
    report(f"graph blocked in a sync node: cancel confirmed after {confirmed[0].latency_ms:.0f} ms")
    assert confirmed[0].latency_ms < 1000
    assert late.status == "timeout" and late.duration_s is not None and late.duration_s < 1.5
