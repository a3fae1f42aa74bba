"""Real runner processes: kill -9 mid-step, and SIGTERM with a short grace period."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from shared.events import (
    RunCancellationConfirmed,
    RunCompleted,
    RunFailed,
    RunRetrying,
    RunStarted,
    StepCompleted,
)
from shared.keys import RUNNERS_GROUP, Keys
from shared.store import EventStore
from tests.runner.support import completed_key, events_of, report, submit, wait_event, wait_state
from tests.support.processes import ServiceProcess

STEP_S = 0.4


BASE_ENV = {"TT_LEASE_S": "2", "TT_CLAIM_INTERVAL_S": "0.2", "TT_SHUTDOWN_GRACE_S": "0.3"}
COUNTING_ENV = {
    "TT_RUNNER_PIPELINE": "tests.runner.support:build_test_pipeline",
    "TT_TEST_STEP_S": str(STEP_S),
}
OFFLINE_ENV = {"TT_STEP_DELAY_S": str(STEP_S)}
"""The real trading-agents pipeline with the offline model, paced so a kill lands mid-step."""


def _runners(redis_url: str, log_dir: Path, env: dict[str, str]) -> dict[str, ServiceProcess]:
    common = {"REDIS_URL": redis_url, **BASE_ENV, **env}
    return {
        name: ServiceProcess("runner", {**common, "TT_RUNNER_ID": name}, log_dir=log_dir)
        for name in ("runner-a", "runner-b")
    }


@pytest.fixture(params=[COUNTING_ENV], ids=["counting"])
def runners(
    request: pytest.FixtureRequest, redis_url: str, tmp_path: Path
) -> Iterator[dict[str, ServiceProcess]]:
    """Two runner processes (started by the test), stopped at the end."""
    made = _runners(redis_url, tmp_path, request.param)
    yield made
    for proc in made.values():
        proc.stop(timeout_s=10)


async def _assert_resumed_exactly_once(store: EventStore, redis: Redis, run_id: str) -> list[RunStarted]:
    state = await wait_state(store, run_id, timeout_s=30)
    assert state.status == "completed", state.error
    events = await events_of(store, run_id)
    completed = [e.step for e in events if isinstance(e, StepCompleted)]
    assert sorted(completed) == sorted(s.name for s in state.steps)  # every step completed exactly once
    for step in completed:
        assert await redis.get(completed_key(run_id, step)) == b"1", step
    assert state.usage.calls == len(state.steps)  # the LLM calls of a clean run, not one more
    terminal = [e for e in events if isinstance(e, RunCompleted | RunCancellationConfirmed | RunFailed)]
    assert len(terminal) == 1 and isinstance(terminal[0], RunCompleted)
    assert (await redis.xpending(store.keys.queue, RUNNERS_GROUP))["pending"] == 0
    return [e for e in events if isinstance(e, RunStarted)]


async def _start_both_and_submit(
    store: EventStore, runners: dict[str, ServiceProcess], **request: Any
) -> tuple[str, str, str]:
    """Both runners up, one run submitted: (run id, the runner executing it, the other)."""
    for proc in runners.values():
        if proc.process is None:
            proc.start(wait=False)
    for proc in runners.values():
        proc.wait_healthy(30)
    run_id = await submit(store, **request)
    await wait_event(store, run_id, lambda e: isinstance(e, RunStarted))
    first = next(e.runner_id for e in await events_of(store, run_id) if isinstance(e, RunStarted))
    other = next(name for name in runners if name != first)
    return run_id, first, other


async def test_a_killed_runners_run_is_resumed_by_another_after_the_lease(
    redis: Redis, keys: Keys, runners: dict[str, ServiceProcess]
) -> None:
    store = EventStore(redis, keys)
    run_id, victim, other = await _start_both_and_submit(store, runners)
    await wait_event(store, run_id, lambda e: isinstance(e, StepCompleted) and e.step == "analyst:market")
    runners[victim].kill()
    killed = time.monotonic()
    await wait_event(store, run_id, lambda e: isinstance(e, RunStarted) and e.runner_id == other)
    report(f"crashed run resumed {time.monotonic() - killed:.2f}s after kill -9 (lease 2 s)")
    started = await _assert_resumed_exactly_once(store, redis, run_id)
    assert [(e.runner_id, e.attempt) for e in started] == [(victim, 1), (other, 2)]
    assert await redis.get(completed_key(run_id, "data_collection")) == b"1"
    metrics = httpx.get(f"{runners[other].url}/metrics", timeout=5).text
    assert "tickertape_reclaims_total 1.0" in metrics
    assert 'tickertape_runs_finished_total{status="completed"} 1.0' in metrics
    assert 'tickertape_queue_depth{queue="tt:queue"}' in metrics


async def test_sigterm_releases_a_running_run_to_another_runner(
    redis: Redis, keys: Keys, runners: dict[str, ServiceProcess]
) -> None:
    store = EventStore(redis, keys)
    run_id, stopping, other = await _start_both_and_submit(store, runners)
    await wait_event(store, run_id, lambda e: isinstance(e, StepCompleted) and e.step == "data_collection")
    process = runners[stopping].process
    assert process is not None
    runners[stopping].signal(signal.SIGTERM)
    assert process.wait(10) == 0
    started = await _assert_resumed_exactly_once(store, redis, run_id)
    assert [e.runner_id for e in started] == [stopping, other]
    retrying = [e for e in await events_of(store, run_id) if isinstance(e, RunRetrying)]
    assert [(e.reason, e.attempt) for e in retrying] == [("released", 2)]


@pytest.mark.parametrize("runners", [OFFLINE_ENV], ids=["offline-pipeline"], indirect=True)
async def test_the_real_pipeline_resumed_after_kill_makes_the_llm_calls_of_a_clean_run(
    redis: Redis, keys: Keys, runners: dict[str, ServiceProcess]
) -> None:
    store = EventStore(redis, keys)
    clean = await submit(store, analysts=("market", "risk", "sentiment"))
    for proc in runners.values():
        proc.start(wait=False)
    # the clean run ends before the other starts: run side by side in step on one runner, the
    # other would end at the same moment as the clean one, before the kill that should cut it
    clean_state = await wait_state(store, clean, timeout_s=30)
    assert clean_state.status == "completed" and clean_state.usage.calls > 0
    run_id, victim, other = await _start_both_and_submit(
        store, runners, analysts=("market", "risk", "sentiment")
    )
    await wait_event(store, run_id, lambda e: isinstance(e, StepCompleted) and e.step == "analyst:market")
    runners[victim].kill()
    state = await wait_state(store, run_id, timeout_s=30)
    assert state.status == "completed", state.error
    events = await events_of(store, run_id)
    completed = [e.step for e in events if isinstance(e, StepCompleted)]
    assert sorted(completed) == sorted(s.name for s in state.steps)
    started = [(e.runner_id, e.attempt) for e in events if isinstance(e, RunStarted)]
    assert started == [(victim, 1), (other, 2)]
    assert state.usage.calls == clean_state.usage.calls
    assert state.result is not None and state.result.decision == clean_state.result.decision  # type: ignore[union-attr]
