"""The append primitive's rules, against a real Redis."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from shared.events import (
    RunCancellationConfirmed,
    RunCancelled,
    RunCompleted,
    RunRequested,
    RunRetrying,
    RunStarted,
    StepStarted,
)
from shared.ids import new_run_id
from shared.keys import Keys
from shared.store import EventStore, RefusalReason, Refused
from shared.submits import Capped, Duplicate, Submitted


def request(user: str = "alice", run_id: str | None = None) -> RunRequested:
    return RunRequested(
        run_id=run_id or new_run_id(),
        user_id=user,
        symbol="AAPL",
        model_id="offline",
        analysts=("market",),
    )


async def test_submit_writes_run_stream_log_and_queue_together(redis: Redis, keys: Keys) -> None:
    store = EventStore(redis, keys)
    req = request()
    outcome = await store.submit(req)
    assert isinstance(outcome, Submitted)
    run_entries = await redis.xrange(keys.run(req.run_id))
    log_entries = await redis.xrange(keys.events)
    queue_entries = await redis.xrange(keys.queue)
    assert [e[1][b"e"] for e in run_entries] == [e[1][b"e"] for e in log_entries]
    assert log_entries[0][1][b"s"].decode() == outcome.event_id
    assert queue_entries[0][1][b"r"].decode() == req.run_id
    assert await redis.sismember(keys.active("alice"), req.run_id)


async def test_nothing_is_appended_after_a_terminal_event(redis: Redis, keys: Keys) -> None:
    store = EventStore(redis, keys)
    req = request()
    await store.submit(req)
    await store.append(RunStarted(run_id=req.run_id, runner_id="r1", attempt=1, steps=()), fence="f1")
    await store.append(RunCompleted(run_id=req.run_id), fence="f1")
    with pytest.raises(Refused) as refused:
        await store.append(RunCompleted(run_id=req.run_id), fence="f1")
    assert refused.value.reason is RefusalReason.ENDED
    assert not await redis.sismember(keys.active("alice"), req.run_id)
    assert 0 < await redis.ttl(keys.run(req.run_id)) <= 48 * 3600
    assert len(await redis.xrange(keys.run(req.run_id))) == 3


async def test_a_stale_fence_cannot_append(redis: Redis, keys: Keys) -> None:
    store = EventStore(redis, keys)
    req = request()
    await store.submit(req)
    await store.append(RunStarted(run_id=req.run_id, runner_id="r1", attempt=1, steps=()), fence="old")
    await store.append(RunStarted(run_id=req.run_id, runner_id="r2", attempt=2, steps=()), fence="new")
    with pytest.raises(Refused) as refused:
        await store.append(StepStarted(run_id=req.run_id, step="x", index=0), fence="old")
    assert refused.value.reason is RefusalReason.FENCED
    await store.append(StepStarted(run_id=req.run_id, step="x", index=0), fence="new")


async def test_cancel_of_a_queued_run_ends_it_and_it_cannot_start(redis: Redis, keys: Keys) -> None:
    store = EventStore(redis, keys)
    req = request()
    await store.submit(req)
    await store.append(RunCancelled(run_id=req.run_id, user_id="alice"))
    assert await store.phase(req.run_id) == "ended"
    assert not await redis.sismember(keys.active("alice"), req.run_id)
    with pytest.raises(Refused):
        await store.append(RunStarted(run_id=req.run_id, runner_id="r", attempt=1, steps=()), fence="f")
    state = await store.state(req.run_id)
    assert state is not None and state.status == "cancelled"


async def test_cancel_of_a_running_run_waits_for_the_runner(redis: Redis, keys: Keys) -> None:
    store = EventStore(redis, keys)
    req = request()
    await store.submit(req)
    await store.append(RunStarted(run_id=req.run_id, runner_id="r", attempt=1, steps=()), fence="f")
    await store.append(RunCancelled(run_id=req.run_id, user_id="alice"))
    state = await store.state(req.run_id)
    assert state is not None and state.status == "running" and state.cancel_requested
    await store.append(RunCancellationConfirmed(run_id=req.run_id, runner_id="r"), fence="f")
    state = await store.state(req.run_id)
    assert state is not None and state.status == "cancelled"


async def test_another_user_cannot_cancel(redis: Redis, keys: Keys) -> None:
    store = EventStore(redis, keys)
    req = request()
    await store.submit(req)
    with pytest.raises(Refused) as refused:
        await store.append(RunCancelled(run_id=req.run_id, user_id="mallory"))
    assert refused.value.reason is RefusalReason.UNKNOWN


async def test_released_run_can_be_cancelled_at_once(redis: Redis, keys: Keys) -> None:
    store = EventStore(redis, keys)
    req = request()
    await store.submit(req)
    await store.append(RunStarted(run_id=req.run_id, runner_id="r", attempt=1, steps=()), fence="f")
    await store.append(RunRetrying(run_id=req.run_id, attempt=2, reason="released"), fence="f")
    await store.append(RunCancelled(run_id=req.run_id, user_id="alice"))
    assert await store.phase(req.run_id) == "ended"


async def test_idempotency_key_returns_the_first_value_even_under_a_race(redis: Redis, keys: Keys) -> None:
    store = EventStore(redis, keys)
    reqs = [request() for _ in range(20)]
    outcomes = await asyncio.gather(*(store.submit(r, idempotency=("k1", f"{r.run_id}|h")) for r in reqs))
    submitted = [o for o in outcomes if isinstance(o, Submitted)]
    duplicates = [o for o in outcomes if isinstance(o, Duplicate)]
    assert len(submitted) == 1 and len(duplicates) == 19
    assert {d.value for d in duplicates} == {f"{submitted[0].run_id}|h"}
    assert await redis.xlen(keys.queue) == 1


async def test_active_cap_is_atomic_and_heals_ended_runs(redis: Redis, keys: Keys) -> None:
    store = EventStore(redis, keys)
    outcomes = await asyncio.gather(*(store.submit(request(), cap=3) for _ in range(10)))
    accepted = [o for o in outcomes if isinstance(o, Submitted)]
    assert len(accepted) == 3
    assert sum(isinstance(o, Capped) for o in outcomes) == 7
    await redis.delete(keys.meta(accepted[0].run_id))  # a run Redis forgot must not hold a slot
    assert isinstance(await store.submit(request(), cap=3), Submitted)


async def test_unknown_and_malformed_entries_are_skipped_and_counted(redis: Redis, keys: Keys) -> None:
    store = EventStore(redis, keys)
    req = request()
    await store.submit(req)
    await redis.xadd(keys.run(req.run_id), {"e": b'{"type":"FromTheFuture","run_id":"x"}'})
    await redis.xadd(keys.run(req.run_id), {"e": b"not json"})
    await redis.xadd(keys.run(req.run_id), {"other": b"field"})
    entries = await store.read(req.run_id)
    assert [type(e).__name__ for _, e in entries] == ["RunRequested"]
    assert store.skipped == 3
