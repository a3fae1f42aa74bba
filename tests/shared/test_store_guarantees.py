"""One terminal event per run, at the append script: once a run ended, neither a dead-letter
(``abandon``), a start nor a cancel is appended, whatever path writes it."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from shared.events import RunCancelled, RunCompleted, RunFailed, RunRequested, RunStarted
from shared.ids import new_run_id
from shared.keys import Keys
from shared.store import EventStore, RefusalReason, Refused


async def _ended(store: EventStore, *, cancelled: bool = False) -> str:
    """A run that has its terminal event: completed by a runner, or cancelled while queued."""
    run_id = new_run_id()
    request = RunRequested(run_id=run_id, user_id="alice", symbol="AAPL", model_id="offline", analysts=())
    await store.submit(request)
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
    run_id = new_run_id()
    await store.submit(
        RunRequested(run_id=run_id, user_id="alice", symbol="AAPL", model_id="offline", analysts=())
    )
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
