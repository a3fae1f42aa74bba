"""Projector replicas: each folds the whole log through its own group into its own SQLite file."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import REGISTRY
from redis.asyncio import Redis

from services.projector.service import ProjectorService
from services.projector.settings import ProjectorSettings
from shared import streamids
from shared.config import Env
from shared.events import RunRequested
from shared.keys import WEBHOOKS_GROUP, Keys
from shared.store import EventStore
from tests.projector.conftest import GRACE, Clock
from tests.projector.support import (
    checksum,
    db_states,
    folded,
    log_head,
    lose,
    queued_ids,
    until_caught_up,
    wait_caught_up,
    write_runs,
)
from tests.support.processes import ServiceProcess

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MakeSettings = Callable[..., ProjectorSettings]
MakeProcess = Callable[..., ServiceProcess]


@asynccontextmanager
async def running(settings: ProjectorSettings, clock: Clock | None = None) -> AsyncIterator[ProjectorService]:
    service = ProjectorService(settings, now=clock)
    await service.start()
    try:
        yield service
    finally:
        await service.stop()


async def _groups(redis: Redis, keys: Keys) -> set[str]:
    names = {g["name"].decode() for g in await redis.xinfo_groups(keys.events)}
    return names - {WEBHOOKS_GROUP}  # every replica also reads through the shared webhooks group


def _duplicates() -> float:
    value = REGISTRY.get_sample_value("tickertape_projector_events_skipped_total", {"reason": "duplicate"})
    return value or 0.0


async def test_two_replica_processes_reach_the_same_rows_and_a_kill_leaves_the_other_serving(
    redis: Redis, keys: Keys, make_process: MakeProcess
) -> None:
    store = EventStore(redis, keys)
    first = await write_runs(store, ["completed", "failed", "running", "queued"])
    a = make_process(TT_PROJECTOR_NAME="a").start()
    b = make_process(TT_PROJECTOR_NAME="b").start()
    head = await log_head(redis, keys.events)
    await asyncio.gather(*(asyncio.to_thread(wait_caught_up, p.url, head) for p in (a, b)))
    db_a, db_b = (ProjectorSettings.from_env(Env(p.env)).db_path for p in (a, b))
    assert db_a != db_b
    assert checksum(db_a) == checksum(db_b)
    assert await _groups(redis, keys) == {"projector:a", "projector:b"}

    a.kill()
    later = await write_runs(store, ["completed", "cancelled"])
    await asyncio.to_thread(wait_caught_up, b.url, await log_head(redis, keys.events))
    assert db_states(db_b) == await folded(store, first + later)

    a.start()  # back from its own file and group: it catches up on what it missed
    await asyncio.to_thread(wait_caught_up, a.url, await log_head(redis, keys.events))
    assert db_states(db_a) == db_states(db_b)


async def test_trimming_the_log_waits_for_the_slowest_replica_until_the_horizon(
    redis: Redis, keys: Keys, make_settings: MakeSettings, clock: Clock
) -> None:
    store = EventStore(redis, keys)
    options = {"TT_LOG_RETENTION_S": "0", "TT_PROJECTOR_HORIZON_S": "3600"}
    await write_runs(store, ["completed"])
    async with running(make_settings(TT_PROJECTOR_NAME="slow", **options), clock) as slow:
        await until_caught_up(slow, redis, keys.events)
        await slow.retention().publish()
        slow_at = slow.projection.checkpoint
    later = await write_runs(store, ["completed", "failed"])
    async with running(make_settings(TT_PROJECTOR_NAME="fast", **options), clock) as fast:
        await until_caught_up(fast, redis, keys.events)
        clock.at += timedelta(minutes=1)  # past every entry's time: the age bound holds nothing
        retention = fast.retention()

        assert await retention.trim_log(clock.at) > 0
        first: Any = await redis.xrange(keys.events, count=1)
        assert streamids.after(first[0][0].decode(), slow_at)  # only what "slow" had applied went
        assert await redis.xlen(keys.events) > 0

        trimmed_to = await redis.xlen(keys.events)
        slow_said: Any = await redis.hget(keys.projectors, "slow")
        published_ms = int(slow_said.split()[1])
        clock.at = EPOCH + timedelta(milliseconds=published_ms + 3_600_000)
        assert await retention.trim_log(clock.at) == 0  # exactly one horizon ago: "slow" still holds
        assert await redis.xlen(keys.events) == trimmed_to

        clock.at += timedelta(hours=2)  # "slow" silent beyond the horizon: it holds nothing back
        await retention.trim_log(clock.at)
        assert await redis.xlen(keys.events) == 0
    assert db_states(fast.settings.db_path).keys() == set(db_states(slow.settings.db_path)) | set(later)


async def test_the_default_replica_keeps_the_groups_name_and_a_new_group_starts_at_its_database(
    redis: Redis, keys: Keys, make_settings: MakeSettings
) -> None:
    """Upgrading a deployment: the default projector reads on through group ``projector`` (no new
    group, nothing replayed or skipped); a new replica seeded with a copy of a database starts its
    group at that database's checkpoint instead of re-reading the log from the start."""
    store = EventStore(redis, keys)
    old = await write_runs(store, ["completed", "running"])
    default = make_settings()
    async with running(default) as service:
        await until_caught_up(service, redis, keys.events)
    new = await write_runs(store, ["completed"])
    before = _duplicates()
    async with running(default) as service:
        await until_caught_up(service, redis, keys.events)
    assert await _groups(redis, keys) == {"projector"}
    assert db_states(default.db_path) == await folded(store, old + new)

    seeded = make_settings(TT_PROJECTOR_NAME="seeded")
    seeded.db_path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(default.db_path, seeded.db_path)
    async with running(seeded) as service:
        await until_caught_up(service, redis, keys.events)
        await asyncio.sleep(0.3)
    assert _duplicates() == before
    assert await _groups(redis, keys) == {"projector", "projector:seeded"}
    assert checksum(seeded.db_path) == checksum(default.db_path)


async def test_two_replicas_reconciling_one_lost_run_requeue_and_fail_it_once(
    redis: Redis, keys: Keys, make_settings: MakeSettings, clock: Clock
) -> None:
    store = EventStore(redis, keys)
    [run_id] = await write_runs(store, ["running"])
    options = {"TT_RECONCILE_INTERVAL_S": "0", "TT_RECONCILE_GRACE_S": str(GRACE.total_seconds())}
    async with (
        running(make_settings(TT_PROJECTOR_NAME="a", **options), clock) as a,
        running(make_settings(TT_PROJECTOR_NAME="b", **options), clock) as b,
    ):
        replicas = (a, b)
        for lost_again in (False, True):
            await asyncio.gather(*(until_caught_up(r, redis, keys.events) for r in replicas))
            await lose(redis, keys, run_id)
            clock.at += GRACE + timedelta(seconds=1)
            await asyncio.gather(*(r.reconciler().run_once() for r in replicas))
            events = [type(e).__name__ for _, e in await store.read(run_id)]
            if not lost_again:
                assert events == ["RunRequested"]
                assert await queued_ids(redis, keys) == [run_id]
            else:
                assert events == ["RunRequested", "RunFailed"]
        await asyncio.gather(*(until_caught_up(r, redis, keys.events) for r in replicas))
    log: Any = await redis.xrange(keys.events)
    requests = [f for _, f in log if f[b"r"] == run_id.encode() and b"RunRequested" in f[b"e"]]
    assert len(requests) == 3  # the original, one re-queue, and the one end_lost writes
    assert db_states(a.settings.db_path)[run_id] == db_states(b.settings.db_path)[run_id]
    assert isinstance((await store.read(run_id))[0][1], RunRequested)


async def test_the_group_of_a_renamed_replica_holds_the_log_only_until_the_horizon(
    redis: Redis, keys: Keys, make_settings: MakeSettings, clock: Clock
) -> None:
    """A deployment whose one projector read through group ``projector`` renames its replicas:
    the old group, never to be read again, stops holding the log back after the horizon."""
    store = EventStore(redis, keys)
    await write_runs(store, ["completed", "failed"])
    await redis.xgroup_create(keys.events, "projector", id="0")
    await redis.xreadgroup("projector", "old", {keys.events: ">"}, count=1)  # left pending
    options = {"TT_LOG_RETENTION_S": "0", "TT_PROJECTOR_HORIZON_S": "1"}
    async with running(make_settings(TT_PROJECTOR_NAME="renamed", **options), clock) as service:
        await until_caught_up(service, redis, keys.events)
        clock.at += timedelta(minutes=1)
        retention = service.retention()
        assert await retention.trim_log(clock.at) == 0  # the old group's pending entry holds it all
        await asyncio.sleep(1.2)
        assert await retention.trim_log(clock.at) > 0
        assert await redis.xlen(keys.events) == 0
