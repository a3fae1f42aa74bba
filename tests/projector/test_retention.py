"""Retention with a controllable clock: the configured ages, never an active run, idempotent."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import timedelta

import pytest
from redis.asyncio import Redis

from services.projector.service import ProjectorService
from services.projector.settings import ProjectorSettings
from shared.keys import RUNNERS_GROUP, Keys
from shared.store import EventStore
from tests.projector.conftest import Clock
from tests.projector.support import db_states, until_caught_up, write_runs

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
