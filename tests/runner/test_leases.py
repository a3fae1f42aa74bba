"""Leases: a live runner keeps its run however long a step takes."""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import Redis

from services.runner.leases import Leases
from services.runner.queue import WorkQueue
from shared.events import RunRetrying, RunStarted, StepStarted
from shared.keys import RUNNERS_GROUP, Keys
from shared.redis_io import ensure_group
from shared.store import EventStore
from tests.runner.support import CountingPipeline, events_of, running_worker, submit, wait_event, wait_state


async def test_a_step_longer_than_the_lease_is_not_taken_over(
    redis_url: str, redis: Redis, keys: Keys
) -> None:
    store = EventStore(redis, keys)
    lease = {"TT_LEASE_S": "0.6", "TT_CLAIM_INTERVAL_S": "0.05"}
    run_id = await submit(store, symbol="LONG", analysts=())
    async with running_worker(redis_url, CountingPipeline(redis), TT_RUNNER_ID="holder", **lease):
        await wait_event(store, run_id, lambda e: isinstance(e, StepStarted))
        async with running_worker(redis_url, CountingPipeline(redis), TT_RUNNER_ID="idle", **lease):
            deliveries: set[tuple[str, int]] = set()
            while not (await store.state(run_id)).terminal:  # type: ignore[union-attr]
                rows: Any = await redis.xpending_range(keys.queue, RUNNERS_GROUP, "-", "+", 10)
                deliveries |= {(row["consumer"].decode(), row["times_delivered"]) for row in rows}
                await asyncio.sleep(0.05)
            state = await wait_state(store, run_id)
    assert state.status == "completed"
    assert deliveries == {("holder", 1)}
    started = [e for e in await events_of(store, run_id) if isinstance(e, RunStarted)]
    assert [(e.runner_id, e.attempt) for e in started] == [("holder", 1)]


async def test_a_runner_that_lost_its_lease_stops_without_writing(
    redis_url: str, redis: Redis, keys: Keys
) -> None:
    store = EventStore(redis, keys)
    run_id = await submit(store, symbol="HANG", analysts=())
    async with running_worker(
        redis_url, CountingPipeline(redis), TT_RUNNER_ID="paused", TT_LEASE_S="0.6"
    ) as worker:
        await wait_event(store, run_id, lambda e: isinstance(e, StepStarted))
        (entry_id,) = list(worker.leases.held)
        # what a runner that took the run over does: claim the entry, start with its own fence
        await redis.xclaim(keys.queue, RUNNERS_GROUP, "usurper", 0, [entry_id], justid=True)
        await store.append(
            RunStarted(run_id=run_id, runner_id="usurper", attempt=2, steps=()), fence="theirs"
        )
        for _ in range(100):
            if not worker.leases.held:
                break
            await asyncio.sleep(0.02)
        assert not worker.leases.held
    events = await events_of(store, run_id)
    assert isinstance(events[-1], RunStarted) and events[-1].runner_id == "usurper"
    rows: Any = await redis.xpending_range(keys.queue, RUNNERS_GROUP, "-", "+", 10)
    assert [(r["consumer"], r["message_id"].decode()) for r in rows] == [(b"usurper", entry_id)]


async def test_a_runner_never_takes_over_a_run_it_is_executing(
    redis_url: str, redis: Redis, keys: Keys
) -> None:
    store = EventStore(redis, keys)
    run_id = await submit(store, symbol="HANG", analysts=())
    settings = {"TT_RUNNER_ID": "holder", "TT_CLAIM_INTERVAL_S": "0.05"}
    async with running_worker(redis_url, CountingPipeline(redis), **settings) as worker:
        await wait_event(store, run_id, lambda e: isinstance(e, StepStarted))
        (entry_id,) = list(worker.leases.held)
        # what a renewal that fell behind looks like to the claim loop: our entry idle past the lease
        await redis.xclaim(keys.queue, RUNNERS_GROUP, "holder", 0, [entry_id], idle=60_000, justid=True)
        await asyncio.sleep(0.5)  # ten claim rounds
        rows: Any = await redis.xpending_range(keys.queue, RUNNERS_GROUP, "-", "+", 10)
        started = [e for e in await events_of(store, run_id) if isinstance(e, RunStarted)]
        assert list(worker.leases.held) == [entry_id]
    assert [(e.runner_id, e.attempt) for e in started] == [("holder", 1)]
    assert [(r["consumer"], r["times_delivered"]) for r in rows] == [(b"holder", 1)]


async def test_a_runner_stopped_past_its_grace_releases_the_run_to_the_next_at_once(
    redis_url: str, redis: Redis, keys: Keys
) -> None:
    """A stop with a step longer than the grace period: one RunRetrying(released) for the next
    attempt, the run back in the queue, and its entry claimable at once, not after the 30 s lease
    (a release is a hand-over, not a failure). Real processes and SIGTERM: test_processes.py."""
    store = EventStore(redis, keys)
    run_id = await submit(store, symbol="LONG")  # its first step takes 2.5 s
    lease = {"TT_LEASE_S": "30"}
    async with running_worker(
        redis_url, CountingPipeline(redis), TT_SHUTDOWN_GRACE_S="0.1", **lease
    ) as first:
        await wait_event(store, run_id, lambda e: isinstance(e, StepStarted))
    retrying = [e for e in await events_of(store, run_id) if isinstance(e, RunRetrying)]
    assert [(e.reason, e.attempt) for e in retrying] == [("released", 2)]
    assert (await store.state(run_id)).status == "pending"  # type: ignore[union-attr]
    async with running_worker(redis_url, CountingPipeline(redis), TT_RUNNER_ID="second", **lease):
        state = await wait_state(store, run_id, timeout_s=10)
    assert state.status == "completed"
    started = [e for e in await events_of(store, run_id) if isinstance(e, RunStarted)]
    assert [(e.runner_id, e.attempt) for e in started] == [(first.settings.runner_id, 1), ("second", 2)]
    assert (await redis.xpending(keys.queue, RUNNERS_GROUP))["pending"] == 0


async def test_a_renewal_round_keeps_parked_entries_and_stops_or_drops_those_taken_over(
    redis: Redis, keys: Keys
) -> None:
    """Parked entries (read while a takeover held the slots) are renewed like held ones; one
    another runner claimed meanwhile is dropped (executing it later would start a run that runner
    owns), and a held one it claimed is stopped as ``lost``."""
    store = EventStore(redis, keys)
    queue = WorkQueue(redis, redis, keys, "me", 30_000)
    await ensure_group(redis, keys.queue, RUNNERS_GROUP)
    for _ in range(4):
        await submit(store)
    jobs = [job for job, _ in await queue.read_batch_with_runs([keys.queue], 4, "")]
    leases = Leases(renew_s=10)
    (kept, lost) = [ex for ex, _ in leases.hold([(job, None) for job in jobs[:2]])]
    leases.parked = [(job, None) for job in jobs[2:]]
    parked, taken = jobs[2:]
    # every entry long idle (a renewal late), then two of them claimed by another runner
    ids = [job.entry_id for job in jobs]
    await redis.xclaim(keys.queue, RUNNERS_GROUP, "me", 0, ids, idle=60_000, justid=True)
    await redis.xclaim(
        keys.queue, RUNNERS_GROUP, "other", 0, [lost.job.entry_id, taken.entry_id], justid=True
    )

    await leases.renew_once(queue)

    assert [job for job, _ in leases.parked] == [parked]
    assert (kept.stop_reason, lost.stop_reason) == (None, "lost")
    assert set(leases.ids()) == {kept.job.entry_id, lost.job.entry_id, parked.entry_id}
    rows: Any = await redis.xpending_range(keys.queue, RUNNERS_GROUP, "-", "+", 10)
    idle = {
        row["message_id"].decode(): row["time_since_delivered"] for row in rows if row["consumer"] == b"me"
    }
    assert set(idle) == {kept.job.entry_id, parked.entry_id}
    assert max(idle.values()) < 10_000, "a held or parked entry's lease was not renewed"
