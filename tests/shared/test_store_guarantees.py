"""One terminal event per run, at the append script: once a run ended, neither a dead-letter
(``abandon``), a start nor a cancel is appended, whatever path writes it."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from shared.events import RunCancelled, RunCompleted, RunFailed, RunRequested, RunStarted, StepStarted
from shared.ids import new_run_id
from shared.keys import Keys
from shared.store import Appends, EventStore, RefusalReason, Refused
from shared.submits import Capped, Submitted


def _request() -> RunRequested:
    return RunRequested(run_id=new_run_id(), user_id="alice", symbol="AAPL", model_id="offline", analysts=())


async def _queued(store: EventStore) -> str:
    request = _request()
    await store.submit(request)
    return request.run_id


async def _ended(store: EventStore, *, cancelled: bool = False) -> str:
    """A run that has its terminal event: completed by a runner, or cancelled while queued."""
    run_id = await _queued(store)
    if cancelled:
        await store.append(RunCancelled(run_id=run_id, user_id="alice"))
    else:
        await store.append(RunStarted(run_id=run_id, runner_id="r1", attempt=1, steps=()), fence="f1")
        await store.append(RunCompleted(run_id=run_id), fence="f1")
    return run_id


async def test_an_abandon_after_the_end_is_refused(redis: Redis, keys: Keys) -> None:
    """Kills: the ended guard skipped for ``abandon`` (bench/mutate.py "abandon after the end")."""
    store = EventStore(redis, keys)
    run_id = await _ended(store)
    before = await redis.xlen(keys.run(run_id)), await redis.xlen(keys.events)
    with pytest.raises(Refused) as refused:
        await store.abandon(RunFailed(run_id=run_id, code="max_attempts", message="gave up", attempt=3))
    assert refused.value.reason is RefusalReason.ENDED
    assert (await redis.xlen(keys.run(run_id)), await redis.xlen(keys.events)) == before
    state = await store.state(run_id)
    assert state is not None and state.status == "completed"


async def test_a_start_after_a_cancel_while_queued_is_refused(redis: Redis, keys: Keys) -> None:
    """Kills: the ended guard skipped for ``start`` ("start after the end"), even with a new fence."""
    store = EventStore(redis, keys)
    run_id = await _ended(store, cancelled=True)
    with pytest.raises(Refused) as refused:
        await store.append(RunStarted(run_id=run_id, runner_id="r2", attempt=1, steps=()), fence="fresh")
    assert refused.value.reason is RefusalReason.ENDED
    assert [type(e) for _, e in await store.read(run_id)] == [RunRequested, RunCancelled]
    assert await store.phase(run_id) == "ended"


async def test_a_cancel_after_the_end_is_refused(redis: Redis, keys: Keys) -> None:
    """Kills: the ended guard skipped for ``cancel`` ("cancel after the end")."""
    store = EventStore(redis, keys)
    run_id = await _ended(store)
    with pytest.raises(Refused) as refused:
        await store.append(RunCancelled(run_id=run_id, user_id="alice", reason="too late"))
    assert refused.value.reason is RefusalReason.ENDED
    state = await store.state(run_id)
    assert state is not None and state.status == "completed" and not state.cancel_requested


async def test_a_second_start_with_the_live_fence_is_refused(redis: Redis, keys: Keys) -> None:
    """Kills: a start with the running execution's own fence appended again ("a second start with
    the live fence")."""
    store = EventStore(redis, keys)
    run_id = await _queued(store)
    started = RunStarted(run_id=run_id, runner_id="r1", attempt=1, steps=())
    await store.append(started, fence="f1")
    with pytest.raises(Refused) as refused:
        await store.append(RunStarted(run_id=run_id, runner_id="r1", attempt=2, steps=()), fence="f1")
    assert refused.value.reason is RefusalReason.FENCED
    assert len(await store.read(run_id)) == 2


async def test_a_terminal_event_expires_the_run_stream_and_meta(redis: Redis, keys: Keys) -> None:
    """Kills: no expiry set at the terminal event ("don't set expiry at terminal"), on either key."""
    store = EventStore(redis, keys, run_ttl_s=600)
    for cancelled in (False, True):
        run_id = await _ended(store, cancelled=cancelled)
        assert 0 < await redis.ttl(keys.run(run_id)) <= 600
        assert 0 < await redis.ttl(keys.meta(run_id)) <= 600


async def test_no_runner_event_is_appended_to_a_queued_run(redis: Redis, keys: Keys) -> None:
    """Kills: the phase check for runner events dropped ("events before the start"): after a retry
    hands the run back to the queue its fence is cleared, so an event with no fence would pass."""
    store = EventStore(redis, keys)
    run_id = await _queued(store)
    await store.append(RunStarted(run_id=run_id, runner_id="r1", attempt=1, steps=()), fence="f1")
    await store.append(RunFailed(run_id=run_id, code="llm", message="503", will_retry=True), fence="f1")
    for fence in ("f1", ""):
        with pytest.raises(Refused) as refused:
            await store.append(StepStarted(run_id=run_id, step="data", index=0), fence=fence)
        assert refused.value.reason is RefusalReason.QUEUED
    assert len(await store.read(run_id)) == 3


async def test_a_batch_stops_at_a_runs_first_refused_event(redis: Redis, keys: Keys) -> None:
    """Kills: ``append_batch`` trying a run's later events after one was refused ("a batch goes on
    past a refusal"): a start would follow a refused step event."""
    store = EventStore(redis, keys)
    run_id = await _queued(store)
    step = StepStarted(run_id=run_id, step="data", index=0)
    start = RunStarted(run_id=run_id, runner_id="r1", attempt=1, steps=())
    (result,) = await store.append_batch([Appends((step, start), fence="f1")])
    assert isinstance(result, Refused) and result.reason is RefusalReason.QUEUED
    assert result.appended == []
    assert [type(e) for _, e in await store.read(run_id)] == [RunRequested]
    assert await store.phase(run_id) == "queued"


async def test_an_ended_run_left_in_the_active_set_does_not_count_against_the_cap(
    redis: Redis, keys: Keys
) -> None:
    """Kills: the submit script's pruning of ended runs dropped ("ended runs count against the
    cap"): a stale member (an ended run the set still names) would block the user for good."""
    store = EventStore(redis, keys)
    ended = await _ended(store)
    await redis.sadd(keys.active("alice"), ended)
    outcome = await store.submit(_request(), cap=1)
    assert isinstance(outcome, Submitted)
    assert not await redis.sismember(keys.active("alice"), ended)
    assert isinstance(await store.submit(_request(), cap=1), Capped)


async def test_end_lost_refuses_a_run_redis_still_knows(redis: Redis, keys: Keys) -> None:
    """Kills: ``end_lost`` writing over a known run ("end_lost overwrites a known run"): a second
    terminal event on a live run, and its meta hash reset."""
    store = EventStore(redis, keys)
    run_id = await _queued(store)
    failure = RunFailed(run_id=run_id, code="lost", message="lost in a failover")
    with pytest.raises(Refused) as refused:
        await store.end_lost(failure, request=None, user_id="alice")
    assert refused.value.reason is RefusalReason.KNOWN
    assert [type(e) for _, e in await store.read(run_id)] == [RunRequested]
    assert await store.phase(run_id) == "queued"
