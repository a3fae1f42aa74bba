"""Real runner processes: kill -9 mid-step, and SIGTERM with a short grace period."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

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


@pytest.fixture
def runners(redis_url: str, tmp_path: Path) -> Iterator[dict[str, ServiceProcess]]:
    """Runner processes executing the counting pipeline, built on demand, stopped at the end."""
    made: dict[str, ServiceProcess] = {}
    base = {
        "REDIS_URL": redis_url, "TT_RUNNER_PIPELINE": "tests.runner.support:build_test_pipeline",
        "TT_TEST_STEP_S": str(STEP_S), "TT_LEASE_S": "2", "TT_CLAIM_INTERVAL_S": "0.2",
        "TT_SHUTDOWN_GRACE_S": "0.3", "TT_LOG_LEVEL": "INFO",
    }  # fmt: skip
    for name in ("runner-a", "runner-b"):
        made[name] = ServiceProcess("runner", {**base, "TT_RUNNER_ID": name}, log_dir=tmp_path)
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
    store: EventStore, runners: dict[str, ServiceProcess]
) -> tuple[str, str, str]:
    """Both runners up, one run submitted: (run id, the runner executing it, the other)."""
    for proc in runners.values():
        proc.start(wait=False)
    for proc in runners.values():
        proc.wait_healthy(30)
    run_id = await submit(store)
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
