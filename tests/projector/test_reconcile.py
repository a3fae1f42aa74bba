"""Reconciliation of runs Redis lost in a failover while the read model had applied them.

The loss is simulated exactly as a failover leaves it: the run's meta hash, run stream and queue
entry are deleted after the projector applied its events (the AOF tail that held them is gone).
The clock of the in-process projector is injected, so the grace period is passed without waiting.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from redis.asyncio import Redis

from services.projector.reconcile import LOST_CODE, Reconciler
from services.projector.service import ProjectorService
from services.projector.settings import ProjectorSettings
from shared.events import RunFailed, RunRequested
from shared.keys import Keys
from shared.reducer import fold
from shared.run_state import RunState
from shared.store import EventStore, Refused
from tests.projector.conftest import GRACE, Clock
from tests.projector.support import db_states, lose, queued_ids, until_caught_up, write_runs
from tests.support.processes import ServiceProcess


async def read_model(service: ProjectorService, redis: Redis, keys: Keys) -> dict[str, RunState]:
    await until_caught_up(service, redis, keys.events)
    return await asyncio.to_thread(db_states, service.settings.db_path)


async def test_a_lost_running_run_is_requeued_then_failed_when_lost_again(
    redis: Redis, keys: Keys, service: ProjectorService, clock: Clock
) -> None:
    store = EventStore(redis, keys)
    [run_id] = await write_runs(store, ["running"])
    before = (await read_model(service, redis, keys))[run_id]
    assert before.status == "running" and any(s.status == "completed" for s in before.steps)
    await lose(redis, keys, run_id)
    reconciler = service.reconciler()

    clock.at += GRACE + timedelta(seconds=1)
    assert await reconciler.run_once() == {"requeue": 1, "lost": 0}
    assert await queued_ids(redis, keys) == [run_id]
    assert await store.phase(run_id) == "queued"
    entries = await store.read(run_id)
    [(_, request)] = entries
    assert isinstance(request, RunRequested)
    assert (request.user_id, request.symbol, request.model_id, request.analysts, request.at) == (
        before.user_id, before.symbol, before.model_id, before.analysts, before.requested_at,
    )  # fmt: skip
    after = (await read_model(service, redis, keys))[run_id]
    assert after.status == "pending" and after.runner_id is None
    assert all(s.status == "pending" for s in after.steps)
    assert after == fold(run_id, entries)  # the read model is the fold of the new run stream
    assert await reconciler.run_once() == {"requeue": 0, "lost": 0}  # within grace of the re-queue

    await lose(redis, keys, run_id)  # lost again (a second failover): no second re-queue
    clock.at += GRACE + timedelta(seconds=1)
    assert await reconciler.run_once() == {"requeue": 0, "lost": 1}
    assert await queued_ids(redis, keys) == []
    assert await store.phase(run_id) == "ended"
    assert await redis.ttl(keys.meta(run_id)) > 0 and await redis.ttl(keys.run(run_id)) > 0
    entries = await store.read(run_id)
    assert [type(e).__name__ for _, e in entries] == ["RunRequested", "RunFailed"]
    failed = (await read_model(service, redis, keys))[run_id]
    assert failed.status == "failed" and failed.error is not None and failed.error.code == LOST_CODE
    assert failed == fold(run_id, entries)
    clock.at += GRACE * 10
    assert await reconciler.run_once() == {"requeue": 0, "lost": 0}


async def test_fresh_runs_and_runs_redis_knows_are_left_alone(
    redis: Redis, keys: Keys, service: ProjectorService, clock: Clock
) -> None:
    store = EventStore(redis, keys)
    fresh, running, queued, done = await write_runs(store, ["running", "running", "queued", "completed"])
    await read_model(service, redis, keys)
    await lose(redis, keys, fresh)
    await lose(redis, keys, done)  # an ended run Redis forgot (expired) is no business of this
    reconciler = service.reconciler()
    queue_before = await queued_ids(redis, keys)

    clock.at += GRACE / 2  # the lost run is still within its grace period
    assert await reconciler.run_once() == {"requeue": 0, "lost": 0}
    assert not await redis.exists(keys.meta(fresh), keys.run(fresh), keys.run(done))

    clock.at += GRACE  # now past it: only the lost active run is acted on
    streams_before = {r: await store.read(r) for r in (running, queued)}
    assert await reconciler.run_once() == {"requeue": 1, "lost": 0}
    assert {r: await store.read(r) for r in (running, queued)} == streams_before
    assert [await store.phase(r) for r in (running, queued)] == ["running", "queued"]
    assert await queued_ids(redis, keys) == [*queue_before, fresh]
    states = await read_model(service, redis, keys)
    assert [states[r].status for r in (fresh, running, queued, done)] == [
        "pending", "running", "pending", "completed",
    ]  # fmt: skip


async def test_no_pass_while_the_projector_is_behind_the_log_by_more_than_the_grace(
    redis: Redis, keys: Keys, service: ProjectorService, clock: Clock
) -> None:
    store = EventStore(redis, keys)
    [run_id] = await write_runs(store, ["running"])
    await read_model(service, redis, keys)
    await lose(redis, keys, run_id)
    clock.at += 2 * GRACE
    behind = Reconciler(
        service._writer,  # type: ignore[arg-type]
        redis, keys, grace=GRACE, checkpoint=lambda: f"{int(time.time() * 1000) - 120_000}-0",
        lock=service.lock, now=clock,
    )  # fmt: skip
    assert not await behind.caught_up()
    assert await behind.run_once() == {"requeue": 0, "lost": 0}
    assert not await redis.exists(keys.meta(run_id))
    assert await service.reconciler().caught_up()


async def test_end_lost_refuses_a_run_redis_knows(redis: Redis, keys: Keys) -> None:
    store = EventStore(redis, keys)
    [run_id] = await write_runs(store, ["running"])
    failure = RunFailed(run_id=run_id, code=LOST_CODE, message="lost")
    with pytest.raises(Refused, match="known"):
        await store.end_lost(failure, request=None, user_id="alice")
    assert await store.phase(run_id) == "running"
    with pytest.raises(ValueError):
        await store.end_lost(
            RunFailed(run_id=run_id, code="x", message="y", will_retry=True), request=None, user_id=""
        )


async def test_the_start_up_pass_requeues_and_a_real_runner_finishes_the_run(
    redis_url: str, redis: Redis, keys: Keys, state_dir: Path, make_settings: Callable[..., ProjectorSettings]
) -> None:
    """A projector (re)started after the failover reconciles once it has caught up; a real runner
    process then executes the re-queued run and the read model shows it completed."""
    store = EventStore(redis, keys)
    [run_id] = await write_runs(store, ["running"])
    first = ProjectorService(make_settings(TT_RECONCILE_INTERVAL_S="0"))
    await first.start()
    try:
        await read_model(first, redis, keys)
    finally:
        await first.stop()
    await lose(redis, keys, run_id)

    second = ProjectorService(make_settings(TT_RECONCILE_INTERVAL_S="3600", TT_RECONCILE_GRACE_S="0"))
    runner = ServiceProcess(
        "runner",
        {
            "REDIS_URL": redis_url,
            "TT_STATE_DIR": str(state_dir),
            "TT_STEP_DELAY_S": "0",
            "TT_LOG_FORMAT": "text",
        },
        log_dir=state_dir,
    )
    await second.start()
    try:
        await _until(lambda: _status(second, run_id), "pending", timeout_s=10)
        assert await store.phase(run_id) in ("queued", "running", "ended")
        await asyncio.to_thread(runner.start, 30.0)
        await _until(lambda: _status(second, run_id), "completed", timeout_s=30)
        assert (await read_model(second, redis, keys))[run_id] == fold(run_id, await store.read(run_id))
    finally:
        await asyncio.to_thread(runner.stop)
        await second.stop()


async def _status(service: ProjectorService, run_id: str) -> str:
    states = await asyncio.to_thread(db_states, service.settings.db_path)
    return states[run_id].status if run_id in states else ""


async def _until(read: Callable[[], object], wanted: str, *, timeout_s: float) -> None:
    deadline, seen = time.monotonic() + timeout_s, ""
    while time.monotonic() < deadline:
        seen = str(await read())  # type: ignore[misc]
        if seen == wanted:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"status {seen!r}, never {wanted!r}")
