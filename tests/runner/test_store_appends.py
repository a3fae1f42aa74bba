"""The event store's primitives a runner ends runs and reads work with, against a real Redis:
``append_batch`` (a run's terminal event and its ack in one step) keeps every rule of ``append``
(phase, fence, one terminal event, active set, repeat of a lost reply) and acks the queue entry
with the appends unless the run is another runner's; ``append(owner=)``; the queue's one-call
read of both queues."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from services.runner.queue import WorkQueue
from shared.events import RunCancelled, RunCompleted, RunRequested, RunStarted, StepStarted
from shared.keys import RUNNERS_GROUP, Keys
from shared.redis_io import ensure_group
from shared.store import Appends, EventStore, RefusalReason, Refused
from tests.runner.support import events_of, submit


async def _held_entry(redis: Redis, keys: Keys, consumer: str = "me") -> tuple[str, str]:
    """Deliver the next queued entry to ``consumer``: (queue, entry id)."""
    await ensure_group(redis, keys.queue, RUNNERS_GROUP)
    reply: Any = await redis.xreadgroup(RUNNERS_GROUP, consumer, {keys.queue: ">"}, count=1)
    return keys.queue, reply[0][1][0][0].decode()


async def _pending(redis: Redis, keys: Keys) -> int:
    return int((await redis.xpending(keys.queue, RUNNERS_GROUP))["pending"])


def _noop(run_id: str, fence: str, entry: tuple[str, str] | None = None) -> Appends:
    started = RunStarted(run_id=run_id, runner_id="me", attempt=1, steps=())
    completed = RunCompleted(run_id=run_id, result=None, duration_s=0.0)
    ack = (entry[0], RUNNERS_GROUP, entry[1]) if entry else None
    return Appends((started, completed), fence=fence, owner="local", ack=ack)


async def test_a_batch_starts_and_completes_runs_and_acks_their_entries(redis: Redis, keys: Keys) -> None:
    store = EventStore(redis, keys)
    runs = [await submit(store, pipeline="noop") for _ in range(3)]
    entries = [await _held_entry(redis, keys) for _ in runs]
    results = await store.append_batch(
        [_noop(r, f"f{i}", e) for i, (r, e) in enumerate(zip(runs, entries, strict=True))]
    )
    assert all(isinstance(r, list) and len(r) == 2 for r in results)
    for run_id in runs:
        state = await store.state(run_id)
        assert state is not None and state.status == "completed"
        assert [type(e) for e in await events_of(store, run_id)] == [RunRequested, RunStarted, RunCompleted]
        assert not await redis.sismember(keys.active("local"), run_id)
        assert await redis.ttl(keys.run(run_id)) > 0
    assert await _pending(redis, keys) == 0
    assert await redis.xlen(keys.events) == 9


async def test_a_refused_run_does_not_stop_the_others_and_its_entry_is_settled_by_reason(
    redis: Redis, keys: Keys
) -> None:
    store = EventStore(redis, keys)
    ended, theirs, fine = [await submit(store, pipeline="noop") for _ in range(3)]
    held = [await _held_entry(redis, keys) for _ in range(3)]
    await store.append(RunCancelled(run_id=ended, user_id="local"))  # cancelled while queued: ended
    await store.append(RunStarted(run_id=theirs, runner_id="other", attempt=1, steps=()), fence="theirs")
    step = StepStarted(run_id=theirs, step="s", index=0, attempt=1)
    results = await store.append_batch(
        [
            _noop(ended, "mine", held[0]),
            Appends((step,), fence="stale", ack=(held[1][0], RUNNERS_GROUP, held[1][1])),
            _noop(fine, "mine", held[2]),
        ]
    )
    assert isinstance(results[0], Refused) and results[0].reason is RefusalReason.ENDED
    assert results[0].appended == []
    assert isinstance(results[1], Refused) and results[1].reason is RefusalReason.FENCED
    assert isinstance(results[2], list) and len(results[2]) == 2
    rows: Any = await redis.xpending_range(keys.queue, RUNNERS_GROUP, "-", "+", 10)
    assert [r["message_id"].decode() for r in rows] == [held[1][1]]  # the fenced one stays pending
    assert (await store.state(ended)).status == "cancelled"  # type: ignore[union-attr]
    assert not any(isinstance(e, StepStarted) for e in await events_of(store, theirs))


async def test_a_repeated_batch_appends_nothing_twice(redis: Redis, keys: Keys) -> None:
    store = EventStore(redis, keys)
    run_id = await submit(store, pipeline="noop")
    item = _noop(run_id, "f")
    first = await store.append_batch([item])
    again = await store.append_batch([item])  # what a re-send after a lost reply does
    assert first == again
    assert len(await events_of(store, run_id)) == 3


async def test_a_run_started_by_another_runner_is_taken_over_only_with_a_new_fence(
    redis: Redis, keys: Keys
) -> None:
    store = EventStore(redis, keys)
    run_id = await submit(store, pipeline="noop")
    (result,) = await store.append_batch([_noop(run_id, "first")])
    assert isinstance(result, list)
    (late,) = await store.append_batch([_noop(run_id, "second")])
    assert isinstance(late, Refused) and late.reason is RefusalReason.ENDED


async def test_append_with_a_known_owner(redis: Redis, keys: Keys) -> None:
    store = EventStore(redis, keys)
    runs = [await submit(store, pipeline="noop") for _ in range(2)]
    await store.append(RunStarted(run_id=runs[0], runner_id="me", attempt=1, steps=()), fence="f")
    await store.append(RunCompleted(run_id=runs[0], result=None, duration_s=0.1), fence="f", owner="local")
    assert not await redis.sismember(keys.active("local"), runs[0])
    assert await redis.sismember(keys.active("local"), runs[1])


async def test_one_read_takes_high_priority_first_and_exactly_the_count(redis: Redis, keys: Keys) -> None:
    store = EventStore(redis, keys)
    normal = [await submit(store, priority="normal") for _ in range(3)]
    high = [await submit(store, priority="high") for _ in range(2)]
    for name in keys.queues:
        await ensure_group(redis, name, RUNNERS_GROUP)
    queue = WorkQueue(redis, redis, keys, "me", 30_000)
    first = await queue.read_batch_with_runs(keys.queues, 3, keys.run(""))
    assert [job.run_id for job, _ in first] == [*high, normal[0]]
    assert [job.queue for job, _ in first] == [keys.queue_high, keys.queue_high, keys.queue]
    assert all(len(raw) == 1 for _, raw in first)  # each run's stream came along: its RunRequested
    decoded = store.decode_entries(first[0][1])
    assert isinstance(decoded[0][1], RunRequested) and decoded[0][1].run_id == high[0]
    rest = await queue.read_batch(keys.queues, 10)
    assert [job.run_id for job in rest] == normal[1:]
    assert await queue.read_batch(keys.queues, 10) == []
