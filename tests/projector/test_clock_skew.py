"""Retention and reconciliation age runs on Redis's clock, whatever the events' ``at`` say.

Runs are appended through the real EventStore with every ``at`` a month in the past (a runner
whose clock is a month behind) or an hour in the future (one an hour ahead). The read model keeps
those stamps for display (``updated_us``), but the ages that decide archiving, stream expiry and
reconciliation come from the global-log entry IDs (``logged_ms``), which Redis stamps.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import msgspec
from redis.asyncio import Redis

from services.projector.rows import COLUMNS, micros, row_of, upsert_sql
from services.projector.schema import CURRENT_VERSION, migrate
from services.projector.service import ProjectorService
from services.projector.settings import ProjectorSettings
from shared import streamids
from shared.clock import millis, redis_now
from shared.keys import Keys
from shared.store import EventStore
from tests.projector.conftest import GRACE, Clock
from tests.projector.support import db_states, folded, lose, queued_ids, until_caught_up, write_runs

HOUR = timedelta(hours=1)
MONTH = timedelta(days=31)


def columns(db_path: Path, run_id: str) -> tuple[int, int]:
    """(updated_us, logged_ms) of one run."""
    with sqlite3.connect(db_path) as db:
        row = db.execute("SELECT updated_us, logged_ms FROM runs WHERE run_id = ?", (run_id,)).fetchone()
    return int(row[0]), int(row[1])


async def last_log_ms(redis: Redis, keys: Keys, run_id: str) -> int:
    """The Redis time of the last global-log entry of ``run_id``."""
    entries: Any = await redis.xrange(keys.events)
    ids = [entry_id.decode() for entry_id, fields in entries if fields[b"r"] == run_id.encode()]
    return streamids.millis(ids[-1])


async def test_retention_ages_ended_runs_by_the_log_not_by_their_at(
    redis: Redis, keys: Keys, service: ProjectorService, clock: Clock
) -> None:
    store = EventStore(redis, keys)
    clock.at = now = await redis_now(redis)
    [behind] = await write_runs(store, ["completed"], at=now - MONTH)
    [ahead] = await write_runs(store, ["failed"], at=now + HOUR)
    [true] = await write_runs(store, ["completed"])
    await until_caught_up(service, redis, keys.events)
    path = service.settings.db_path
    for run_id, at in ((behind, now - MONTH), (ahead, now + HOUR)):
        assert columns(path, run_id) == (micros(at), await last_log_ms(redis, keys, run_id))
    retention = service.retention()
    runs = [behind, ahead, true]

    assert await retention.run_once() == _report()  # all three ended a moment ago, on Redis
    assert set(db_states(path)) == set(runs)
    assert [await redis.exists(keys.run(r)) for r in runs] == [1, 1, 1]

    clock.at += 48 * HOUR + HOUR / 2  # past the 48 h stream TTL for all three, "ahead" included
    assert await retention.run_once() == _report(run_streams_expired=3)
    assert set(db_states(path)) == set(runs)

    clock.at += timedelta(days=30)  # past the 30-day history for all three (and the log's 7 days)
    report = await retention.run_once()
    assert (report["archived"], report["run_streams_expired"]) == (3, 0), report
    assert set(db_states(path, "runs_archive")) == set(runs)


async def test_with_redis_time_a_run_finished_a_month_behind_stays(
    redis: Redis, keys: Keys, make_settings: Callable[..., ProjectorSettings]
) -> None:
    """No injected clock: the projector's "now" is Redis's TIME, as in production."""
    svc = ProjectorService(make_settings())
    await svc.start()
    try:
        store = EventStore(redis, keys)
        now = await redis_now(redis)
        [behind] = await write_runs(store, ["completed"], at=now - MONTH)
        await until_caught_up(svc, redis, keys.events)
        assert await svc.retention().run_once() == _report()
        assert set(db_states(svc.settings.db_path)) == {behind}
        assert await redis.exists(keys.run(behind))
    finally:
        await svc.stop()


async def test_reconciliation_grace_is_on_redis_time(
    redis: Redis, keys: Keys, service: ProjectorService, clock: Clock
) -> None:
    """A lost run last written by a runner a month behind is not re-queued at once; one written by
    a runner an hour ahead is re-queued once the grace has passed, not an hour later."""
    store = EventStore(redis, keys)
    clock.at = now = await redis_now(redis)
    [behind] = await write_runs(store, ["running"], at=now - MONTH)
    [ahead] = await write_runs(store, ["running"], at=now + HOUR)
    await until_caught_up(service, redis, keys.events)
    for run_id in (behind, ahead):
        await lose(redis, keys, run_id)
    reconciler = service.reconciler()

    clock.at += GRACE / 2
    assert await reconciler.run_once() == {"requeue": 0, "lost": 0}
    assert await queued_ids(redis, keys) == []

    clock.at += GRACE
    assert await reconciler.run_once() == {"requeue": 2, "lost": 0}
    assert sorted(await queued_ids(redis, keys)) == sorted([behind, ahead])
    await until_caught_up(service, redis, keys.events)
    assert await reconciler.run_once() == {"requeue": 0, "lost": 0}  # re-queued: fresh again


async def test_with_redis_time_a_lost_run_stamped_an_hour_ahead_is_reconciled(
    redis: Redis, keys: Keys, make_settings: Callable[..., ProjectorSettings]
) -> None:
    svc = ProjectorService(make_settings(TT_RECONCILE_INTERVAL_S="0", TT_RECONCILE_GRACE_S="0.5"))
    await svc.start()
    try:
        store = EventStore(redis, keys)
        [ahead] = await write_runs(store, ["running"], at=await redis_now(redis) + HOUR)
        await until_caught_up(svc, redis, keys.events)
        await lose(redis, keys, ahead)
        await asyncio.sleep(0.6)
        assert await svc.reconciler().run_once() == {"requeue": 1, "lost": 0}
        assert await queued_ids(redis, keys) == [ahead]
    finally:
        await svc.stop()


async def test_migration_v4_backfills_logged_ms_from_the_run_stream_id(
    redis: Redis, keys: Keys, tmp_path: Path
) -> None:
    """A v3 database's rows get their Redis time from ``last_event_id``, not from ``updated_us``;
    the ended-runs index moves onto it."""
    store = EventStore(redis, keys)
    run_ids = await write_runs(store, ["completed", "running"], at=await redis_now(redis) - MONTH)
    states = await folded(store, run_ids)
    path = tmp_path / "v3.db"
    assert migrate(path, target=3) == 3
    v3 = tuple(c for c in COLUMNS if c != "logged_ms")
    with sqlite3.connect(path) as db:
        for state in states.values():
            row = dict(zip(COLUMNS, row_of(state, msgspec.json.encode(state)), strict=True))
            db.execute(upsert_sql(v3), [row[c] for c in v3])

    assert migrate(path) == CURRENT_VERSION == 4
    for run_id, state in states.items():
        assert state.updated_at is not None
        logged = streamids.millis(state.last_event_id)
        assert columns(path, run_id) == (micros(state.updated_at), logged)
        assert logged - millis(state.updated_at) > (MONTH - HOUR).total_seconds() * 1000
    with sqlite3.connect(path) as db:
        indexed = [row[2] for row in db.execute("PRAGMA index_info(runs_ended)")]
    assert indexed == ["logged_ms"]


def _report(*, archived: int = 0, run_streams_expired: int = 0) -> dict[str, int]:
    expired = run_streams_expired
    return {"archived": archived, "run_streams_expired": expired, "log_trimmed": 0, "queue_trimmed": 0}
