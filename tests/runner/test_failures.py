"""Poison entries, runs failing every attempt, permanent errors and deadlines."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from typing import Any

from prometheus_client import REGISTRY
from redis.asyncio import Redis

from services.runner.runs import _elapsed_before
from shared import streamids
from shared.catalog import plan_steps
from shared.events import EventCodec, RunFailed, RunStarted
from shared.keys import RUNNERS_GROUP, Keys
from shared.store import Entry, EventStore
from tests.runner.support import (
    CountingPipeline,
    counted_finished,
    events_of,
    report,
    running_worker,
    submit,
    wait_state,
)
from tests.support.pipelines import Attempt, PipelineDouble


def _sample(name: str, **labels: str) -> float:
    """A runner metric of this process (the workers here share the default registry)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def _deadletters(redis: Redis, keys: Keys) -> list[dict[str, str]]:
    entries: Any = await redis.xrange(keys.deadletter)
    return [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in entries]


async def test_a_poison_entry_is_dead_lettered_and_the_next_run_completes(
    redis_url: str, redis: Redis, keys: Keys
) -> None:
    store = EventStore(redis, keys)
    await redis.xadd(keys.queue, {"garbage": "1"})
    await redis.xadd(keys.queue, {"r": "no-such-run"})
    # a run Redis knows whose RunRequested cannot be read (here: garbage in its place)
    await redis.xadd(keys.run("garbled"), {"not": "an event"})
    await redis.hset(keys.meta("garbled"), mapping={"phase": "queued", "user": "local"})
    await redis.xadd(keys.queue, {"r": "garbled"})
    run_id = await submit(store)
    counted = _sample("tickertape_deadletters_total", reason="poison")
    async with running_worker(redis_url, CountingPipeline(redis)):
        assert (await wait_state(store, run_id)).status == "completed"
        await asyncio.sleep(0.1)
    letters = await _deadletters(redis, keys)
    assert [d["reason"] for d in letters] == ["poison", "poison", "poison"]
    assert sorted(d.get("r", "") for d in letters) == ["", "garbled", "no-such-run"]  # any order
    assert _sample("tickertape_deadletters_total", reason="poison") == counted + 3
    # the run the poison named is ended, saying why, so no reader waits on it
    (ended,) = [e for e in await events_of(store, "garbled") if isinstance(e, RunFailed)]
    assert (ended.code, ended.attempt, ended.will_retry) == ("poison", 1, False)
    assert ended.message == "the entry names no run with a RunRequested"
    assert (await redis.xpending(keys.queue, RUNNERS_GROUP))["pending"] == 0


async def test_a_poison_entry_found_on_a_later_delivery_is_ended_naming_that_attempt(
    redis_url: str, redis: Redis, keys: Keys
) -> None:
    """A runner read the entry and died; the runner claiming it finds the poison (a run whose
    first event is no RunRequested: its start was trimmed away) on the entry's second delivery,
    and the run's RunFailed says so (not a default first)."""
    store = EventStore(redis, keys)
    stray = RunStarted(run_id="garbled", runner_id="gone", attempt=1, steps=())
    await redis.xadd(keys.run("garbled"), {"e": EventCodec().encode(stray)})
    await redis.hset(keys.meta("garbled"), mapping={"phase": "queued", "user": "local"})
    await redis.xadd(keys.queue, {"r": "garbled"})
    await redis.xgroup_create(keys.queue, RUNNERS_GROUP, id="0", mkstream=True)
    await redis.xreadgroup(RUNNERS_GROUP, "a-runner-that-died", {keys.queue: ">"})
    async with running_worker(redis_url, CountingPipeline(redis), TT_LEASE_S="0.3"):
        async with asyncio.timeout(10):
            while not await _deadletters(redis, keys):
                await asyncio.sleep(0.02)
    (ended,) = [e for e in await events_of(store, "garbled") if isinstance(e, RunFailed)]
    assert (ended.code, ended.attempt) == ("poison", 2)


async def test_a_run_failing_every_attempt_is_dead_lettered_after_the_maximum(
    redis_url: str, redis: Redis, keys: Keys
) -> None:
    store = EventStore(redis, keys)
    failing = await submit(store, symbol="FAIL")
    counted = _sample("tickertape_deadletters_total", reason="max_attempts")
    settings = {"TT_LEASE_S": "0.5", "TT_MAX_ATTEMPTS": "3"}
    async with running_worker(redis_url, CountingPipeline(redis), **settings) as worker:
        state = await wait_state(store, failing)
        healthy = await submit(store)
        assert (await wait_state(store, healthy)).status == "completed"
        await counted_finished(worker, Counter(failed=1, completed=1))
    assert state.status == "failed" and state.error is not None and state.error.code == "max_attempts"
    # The last failure is named in the run's own error, and the attempts counted are the ones made.
    assert state.error.message.startswith("gave up after 3 attempts; last: ") and "503" in state.error.message
    assert _sample("tickertape_deadletters_total", reason="max_attempts") == counted + 1
    events = await events_of(store, failing)
    assert [e.attempt for e in events if isinstance(e, RunStarted)] == [1, 2, 3]
    assert [e.attempt for e in events if isinstance(e, RunFailed) and not e.will_retry] == [3]
    retried = [e for e in events if isinstance(e, RunFailed) and e.will_retry]
    assert [(e.code, e.attempt) for e in retried] == [("llm_unavailable", n) for n in (1, 2, 3)]
    letters = await _deadletters(redis, keys)
    assert [(d["reason"], d["r"]) for d in letters] == [("max_attempts", failing)]
    assert "503" in letters[0]["detail"]
    assert not await redis.sismember(keys.active("local"), failing)


async def test_a_permanent_error_fails_the_run_at_once(redis_url: str, redis: Redis, keys: Keys) -> None:
    store = EventStore(redis, keys)
    run_id = await submit(store, symbol="PERM")
    async with running_worker(redis_url, CountingPipeline(redis)) as worker:
        state = await wait_state(store, run_id)
        await counted_finished(worker, Counter(failed=1))
    assert state.status == "failed" and state.error is not None and state.error.code == "bad_model"
    assert len([e for e in await events_of(store, run_id) if isinstance(e, RunStarted)]) == 1
    assert await redis.xlen(keys.deadletter) == 0
    assert (await redis.xpending(keys.queue, RUNNERS_GROUP))["pending"] == 0


async def test_the_run_deadline_ends_a_run_with_timeout(redis_url: str, redis: Redis, keys: Keys) -> None:
    store = EventStore(redis, keys)
    run_id = await submit(store, symbol="HANG", deadline_s=0.5)
    async with running_worker(redis_url, CountingPipeline(redis)) as worker:
        state = await wait_state(store, run_id, timeout_s=10)
        await counted_finished(worker, Counter(timeout=1))
    assert state.status == "timeout" and state.error is not None and state.error.code == "timeout"
    assert state.duration_s is not None and 0.4 < state.duration_s < 3
    assert (await redis.xpending(keys.queue, RUNNERS_GROUP))["pending"] == 0


async def test_a_request_cannot_extend_the_operators_deadline(
    redis_url: str, redis: Redis, keys: Keys
) -> None:
    store = EventStore(redis, keys)
    run_id = await submit(store, symbol="HANG", deadline_s=3600)
    async with running_worker(redis_url, CountingPipeline(redis), TT_RUN_DEADLINE_S="0.5"):
        state = await wait_state(store, run_id, timeout_s=10)
    assert state.status == "timeout" and state.error is not None and state.error.code == "timeout"


async def test_a_step_past_its_timeout_ends_the_run_with_timeout(
    redis_url: str, redis: Redis, keys: Keys
) -> None:
    store = EventStore(redis, keys)
    run_id = await submit(store, symbol="HANG")
    async with running_worker(redis_url, CountingPipeline(redis), TT_STEP_TIMEOUT_S="0.4"):
        state = await wait_state(store, run_id, timeout_s=10)
    assert state.status == "timeout" and state.error is not None and state.error.code == "step_timeout"
    assert "data_collection" in state.error.message


async def test_the_step_timeout_counts_from_each_steps_own_start(
    redis_url: str, redis: Redis, keys: Keys
) -> None:
    """Seven steps of 0.25 s under a 1.2 s step timeout, 1.75 s in all: none is late (kills a
    step deadline counted from anything but the step's start, which the supervisor checks every
    1.2 s; the slack per step is for busy cores)."""
    store = EventStore(redis, keys)
    run_id = await submit(store)
    async with running_worker(redis_url, CountingPipeline(redis, step_s=0.25), TT_STEP_TIMEOUT_S="1.2"):
        state = await wait_state(store, run_id, timeout_s=10)
    assert state.status == "completed", state.error


async def test_an_entry_deleted_while_pending_is_acked_when_claimed(
    redis_url: str, redis: Redis, keys: Keys
) -> None:
    await redis.xgroup_create(keys.queue, RUNNERS_GROUP, id="0", mkstream=True)
    entry_id = await redis.xadd(keys.queue, {"r": "gone"})
    await redis.xreadgroup(RUNNERS_GROUP, "a-runner-that-died", {keys.queue: ">"})
    await redis.xdel(keys.queue, entry_id)
    async with running_worker(redis_url, CountingPipeline(redis), TT_LEASE_S="0.3") as worker:
        for _ in range(100):
            # Both: the worker counts the entry just after its XACK, which this poll can see first.
            if (await redis.xpending(keys.queue, RUNNERS_GROUP))["pending"] == 0 and worker.vanished:
                break
            await asyncio.sleep(0.05)
        assert worker.vanished == 1
    assert (await redis.xpending(keys.queue, RUNNERS_GROUP))["pending"] == 0
    assert await redis.xlen(keys.deadletter) == 0


async def test_retries_wait_out_a_backoff_that_doubles(redis_url: str, redis: Redis, keys: Keys) -> None:
    """Attempt n+1 starts no sooner than base · 2^(n-1) · 0.5 (the jitter's low end) after attempt
    n failed, on Redis's clock; the claim loop polls far more often, so a zero backoff fails."""
    base_s = 0.5
    store = EventStore(redis, keys)
    run_id = await submit(store, symbol="FLAKY", analysts=())
    settings = {"TT_RETRY_BACKOFF_S": str(base_s), "TT_LEASE_S": "4", "TT_CLAIM_INTERVAL_S": "0.05"}
    async with running_worker(redis_url, CountingPipeline(redis), **settings):
        state = await wait_state(store, run_id, timeout_s=30)
    assert state.status == "completed"
    entries = await store.read(run_id)
    failed = [streamids.millis(i) for i, e in entries if isinstance(e, RunFailed) and e.will_retry]
    started = [streamids.millis(i) for i, e in entries if isinstance(e, RunStarted)]
    assert len(failed) == 2 and len(started) == 3
    gaps = [(start - fail) / 1000 for fail, start in zip(failed, started[1:], strict=True)]
    report(f"retry gaps {gaps} (base {base_s}s)")
    for attempt, gap in enumerate(gaps, start=1):
        assert gap >= base_s * 2 ** (attempt - 1) * 0.5, (attempt, gaps)
        # and no later than the jitter's high end (plus polling and a busy machine): a retry that
        # fails to schedule its delay is taken over only when the 4 s lease runs out
        assert gap < base_s * 2 ** (attempt - 1) * 1.5 + 1.5, (attempt, gaps)


async def test_a_permanent_error_on_a_later_attempt_names_that_attempt(
    redis_url: str, redis: Redis, keys: Keys
) -> None:
    """A runner read the entry and died; the next attempt fails for good, and says which it was."""
    store = EventStore(redis, keys)
    run_id = await submit(store, symbol="PERM")
    await redis.xgroup_create(keys.queue, RUNNERS_GROUP, id="0", mkstream=True)
    await redis.xreadgroup(RUNNERS_GROUP, "a-runner-that-died", {keys.queue: ">"})
    async with running_worker(redis_url, CountingPipeline(redis), TT_LEASE_S="0.3"):
        await wait_state(store, run_id)
    (failed,) = [e for e in await events_of(store, run_id) if isinstance(e, RunFailed)]
    assert (failed.code, failed.attempt) == ("bad_model", 2)


class SwallowsTheTimeout(PipelineDouble):
    """A step whose client code swallows one cancellation (here: the step timeout's) and goes on."""

    async def body(self, attempt: Attempt) -> None:
        await attempt.reporter.started(plan_steps(attempt.request.analysts)[0], 0)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(3600)
        await asyncio.sleep(3600)
        return None


async def test_a_step_timeout_cancels_a_pipeline_that_swallows_it_again_at_once(
    redis_url: str, redis: Redis, keys: Keys
) -> None:
    """After a timeout the supervisor cancels until the pipeline ends (``until_cancelled``), not
    once and then a 5 s wait (``STOP_WAIT_S``): the run ends well within 3 s of its 0.3 s step."""
    store = EventStore(redis, keys)
    run_id = await submit(store)
    async with running_worker(redis_url, SwallowsTheTimeout(), TT_STEP_TIMEOUT_S="0.3"):
        state = await wait_state(store, run_id, timeout_s=3)
    assert state.status == "timeout" and state.error is not None and state.error.code == "step_timeout"


def test_the_time_before_an_attempt_runs_from_the_first_start_on_redis_clock() -> None:
    """``_elapsed_before``: 0 for the first attempt, else from the first RunStarted's stream ID to
    this attempt's, in seconds (what the run's deadline and duration add up)."""
    first = RunStarted(run_id="r", runner_id="a", attempt=1, steps=())
    entries: list[Entry] = [("1000-0", first), ("3500-1", first)]
    assert _elapsed_before(entries, "1000-0") == 0.0
    assert _elapsed_before(entries, "3500-1") == 2.5
    assert _elapsed_before([], "3500-1") == 0.0
