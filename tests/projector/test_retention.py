"""Retention with a controllable clock: the configured ages, never an active run, idempotent."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import timedelta

import msgspec
import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from services.projector.service import ProjectorService
from services.projector.settings import ProjectorSettings
from shared.clock import redis_now
from shared.ids import new_run_id
from shared.keys import RUNNERS_GROUP, Keys
from shared.store import EventStore
from tests.projector.conftest import Clock
from tests.projector.support import db_states, plan, until_caught_up, write_runs

HOUR = timedelta(hours=1)


@pytest.fixture
async def service(
    make_settings: Callable[..., ProjectorSettings], clock: Clock
) -> AsyncIterator[ProjectorService]:
    settings = make_settings(
        TT_SNAPSHOT_INTERVAL_S="3600",  # snapshots on (none taken by the schedule during a test)
        TT_LOG_RETENTION_S=str(24 * 3600),
        TT_QUEUE_RETENTION_S="3600",
    )
    svc = ProjectorService(settings, now=clock)
    await svc.start()
    try:
        yield svc
    finally:
        await svc.stop()


async def test_each_rule_acts_at_its_age_and_never_on_an_active_run(
    redis: Redis, keys: Keys, service: ProjectorService, clock: Clock
) -> None:
    store = EventStore(redis, keys)
    ended = await write_runs(store, ["completed", "failed", "cancel-queued"])
    active = await write_runs(store, ["running", "queued"])
    await _runner_takes_queue(redis, keys, leave_pending=1)
    await redis.xgroup_create(keys.events, "audit", id="0")
    audit = await redis.xreadgroup("audit", "a1", {keys.events: ">"}, count=20)
    await redis.xack(keys.events, "audit", *[entry_id for entry_id, _ in audit[0][1][:-1]])
    await until_caught_up(service, redis, keys.events)
    retention = service.retention()
    total_log = await redis.xlen(keys.events)

    clock.at += HOUR / 2
    assert await retention.run_once() == _report()

    clock.at += 2 * HOUR  # acked queue entries are an hour old; the pending one stays
    assert await retention.run_once() == _report(queue_trimmed=len(ended + active) - 1)
    assert await redis.xlen(keys.queue) == 1

    clock.at += 47 * HOUR  # ended runs' streams are past their 48 h; no snapshot yet: log kept
    assert await retention.run_once() == _report(run_streams_expired=len(ended))
    assert [await redis.exists(keys.run(r)) for r in ended + active] == [0, 0, 0, 1, 1]

    await service.snapshot()  # now the log may go, but not past audit's pending entry
    assert await retention.run_once() == _report(log_trimmed=19)
    assert await redis.xlen(keys.events) == total_log - 19

    clock.at += timedelta(days=30)
    assert await retention.run_once() == _report(archived=len(ended), log_trimmed=0)
    assert set(db_states(service.settings.db_path)) == set(active)
    assert set(db_states(service.settings.db_path, "runs_archive")) == set(ended)
    assert await retention.run_once() == _report()  # idempotent


async def test_delete_mode_drops_old_runs_instead_of_archiving(
    redis: Redis, keys: Keys, make_settings: Callable[..., ProjectorSettings], clock: Clock
) -> None:
    svc = ProjectorService(make_settings(TT_HISTORY_ACTION="delete", TT_HISTORY_DAYS="1"), now=clock)
    await svc.start()
    try:
        store = EventStore(redis, keys)
        ended = await write_runs(store, ["completed"])
        active = await write_runs(store, ["running"])
        await until_caught_up(svc, redis, keys.events)
        clock.at += timedelta(days=2)
        report = await svc.retention().run_once()
        assert report["deleted"] == len(ended)
        assert set(db_states(svc.settings.db_path)) == set(active)
        assert db_states(svc.settings.db_path, "runs_archive") == {}
    finally:
        await svc.stop()


def _report(
    *, archived: int = 0, run_streams_expired: int = 0, log_trimmed: int = 0, queue_trimmed: int = 0
) -> dict[str, int]:
    return {
        "archived": archived,
        "run_streams_expired": run_streams_expired,
        "log_trimmed": log_trimmed,
        "queue_trimmed": queue_trimmed,
    }


async def _runner_takes_queue(redis: Redis, keys: Keys, *, leave_pending: int) -> None:
    await redis.xgroup_create(keys.queue, RUNNERS_GROUP, id="0")
    taken = await redis.xreadgroup(RUNNERS_GROUP, "runner-1", {keys.queue: ">"}, count=100)
    ids = [entry_id for entry_id, _ in taken[0][1]]
    await redis.xack(keys.queue, RUNNERS_GROUP, *ids[:-leave_pending])


def _actions(action: str) -> float:
    return REGISTRY.get_sample_value("tickertape_retention_actions_total", {"action": action}) or 0.0


async def test_a_stream_ending_just_before_a_pass_is_expired_by_a_later_pass(
    redis: Redis, keys: Keys, service: ProjectorService, clock: Clock
) -> None:
    """Each pass looks back only a day before its cutoff (runs older than that were swept
    already); a run that was not yet due at one pass is due at the next and must not slip
    between the two windows. What is done is counted by action in the metrics."""
    store = EventStore(redis, keys)
    clock.at = await redis_now(redis)
    ended = await write_runs(store, ["completed", "failed"])
    for run_id in ended:
        await redis.persist(keys.run(run_id))  # EXPIRE at the end is the first line; this is the backstop
    await until_caught_up(service, redis, keys.events)
    retention = service.retention()
    before = _actions("run_streams_expired")

    clock.at += 47 * HOUR  # an hour before their 48 h TTL
    assert (await retention.run_once())["run_streams_expired"] == 0
    clock.at += 2 * HOUR
    assert (await retention.run_once())["run_streams_expired"] == len(ended)
    assert [await redis.exists(keys.run(r)) for r in ended] == [0, 0]
    assert _actions("run_streams_expired") == before + len(ended)


async def test_the_log_after_the_latest_snapshot_is_kept_though_the_checkpoint_is_past_it(
    redis: Redis, keys: Keys, service: ProjectorService, clock: Clock
) -> None:
    """A replica rebuilds from its latest snapshot plus the log after it: trimming stops at the
    snapshot's checkpoint, however far the live checkpoint went on, and however old the log."""
    store = EventStore(redis, keys)
    await write_runs(store, ["completed"])
    await until_caught_up(service, redis, keys.events)
    taken = await service.snapshot()
    await write_runs(store, ["failed", "running"])
    await until_caught_up(service, redis, keys.events)
    after_snapshot = len(await redis.xrange(keys.events, min=f"({taken.checkpoint}"))
    clock.at += timedelta(days=8)  # past the log's 24 h
    assert await service.retention().trim_log(clock.at) > 0
    assert await redis.xlen(keys.events) == after_snapshot


async def test_both_work_queues_are_trimmed_and_counted(
    redis: Redis, keys: Keys, service: ProjectorService, clock: Clock
) -> None:
    store = EventStore(redis, keys)
    for priority in ("high", "normal", "high"):
        await store.submit(msgspec.structs.replace(plan(new_run_id(), "queued")[0], priority=priority))
    for queue in keys.queues:
        await redis.xgroup_create(queue, RUNNERS_GROUP, id="0")
        taken = await redis.xreadgroup(RUNNERS_GROUP, "runner-1", {queue: ">"})
        await redis.xack(queue, RUNNERS_GROUP, *[entry_id for entry_id, _ in taken[0][1]])
    clock.at += 2 * HOUR  # past the queues' hour
    assert (await service.retention().run_once())["queue_trimmed"] == 3
    assert [await redis.xlen(queue) for queue in keys.queues] == [0, 0]


async def test_a_pass_over_more_than_a_thousand_expired_streams_removes_and_counts_them_all(
    redis: Redis, keys: Keys, service: ProjectorService, clock: Clock
) -> None:
    """Streams are unlinked 500 to a pipeline: every chunk is sent (past the first thousand
    too) and every chunk's removals add up in the report. One real ended run, copied in SQLite
    and Redis: 1,201 runs ended at the same instant, whose streams outlived their EXPIRE."""
    store = EventStore(redis, keys)
    [ended] = await write_runs(store, ["completed"])
    await until_caught_up(service, redis, keys.events)
    retention = service.retention()
    async with retention.db.execute("PRAGMA table_info(runs)") as cursor:  # no generated columns
        columns = [str(info[1]) for info in await cursor.fetchall()]
    copies = [new_run_id() for _ in range(1200)]
    chosen = ", ".join("?" if c == "run_id" else c for c in columns)
    await retention.db.executemany(
        f"INSERT INTO runs ({', '.join(columns)}) SELECT {chosen} FROM runs WHERE run_id = ?",
        [(run_id, ended) for run_id in copies],
    )
    await retention.db.commit()
    async with redis.pipeline(transaction=False) as pipe:
        for run_id in [ended, *copies]:
            pipe.persist(keys.run(run_id))
            pipe.xadd(keys.run(run_id), {"e": "{}"})
            pipe.hset(keys.meta(run_id), "user", "u")
        await pipe.execute()

    clock.at += 49 * HOUR
    assert await retention.expire_run_streams(clock.at) == 1201
    async with redis.pipeline(transaction=False) as pipe:
        for run_id in [ended, *copies]:
            pipe.exists(keys.run(run_id), keys.meta(run_id))
        assert sum(await pipe.execute()) == 0
