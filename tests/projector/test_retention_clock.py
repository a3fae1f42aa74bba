"""Retention on Redis's clock, in a real projector process whose own wall clock is a month ahead."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from redis.asyncio import Redis

from services.projector.service import ProjectorService
from services.projector.settings import ProjectorSettings
from shared.clock import millis, redis_now
from shared.keys import Keys
from shared.store import EventStore
from tests.projector.conftest import Clock
from tests.projector.support import db_states, log_head, until_caught_up, wait_caught_up, write_runs
from tests.support.processes import ROOT, ServiceProcess

MONTH_S = 31 * 86400
SKEWED = {
    "TT_TEST_CLOCK_SKEW_S": str(MONTH_S),
    "PYTHONPATH": f"{ROOT / 'tests' / 'chaos' / 'skewed_clock'}:{ROOT}",
    "TT_RETENTION_INTERVAL_S": "0.2",
}


def _passes(process: ServiceProcess) -> int:
    return process.logs().count("retention pass")


async def _more_passes(process: ServiceProcess, n: int, timeout_s: float = 20.0) -> None:
    """Wait until the process logged ``n`` more retention passes than now."""
    target, deadline = _passes(process) + n, time.monotonic() + timeout_s
    while _passes(process) < target:
        assert time.monotonic() < deadline, process.logs()[-2000:]
        await asyncio.sleep(0.1)


async def test_a_projector_a_month_ahead_archives_no_fresh_run(
    redis: Redis,
    keys: Keys,
    make_process: Callable[..., ServiceProcess],
    make_settings: Callable[..., ProjectorSettings],
) -> None:
    """Kills: retention's "now" read from the projector's own clock (``redis_now`` or ``now_of``
    in shared/clock.py returning ``utcnow()``): the run just ended would be archived
    as 31 days old and its stream expired."""
    process: Any = make_process(**SKEWED).start()
    store = EventStore(redis, keys)
    run_ids = await write_runs(store, ["completed", "failed"])
    await asyncio.to_thread(wait_caught_up, process.url, await log_head(redis, keys.events))
    await _more_passes(process, 2)

    db_path = make_settings().db_path
    assert set(db_states(db_path)) == set(run_ids)
    assert db_states(db_path, "runs_archive") == {}
    assert [await redis.exists(keys.run(r)) for r in run_ids] == [1, 1]


async def test_expiring_a_run_stream_removes_its_meta_hash_too(
    redis: Redis, keys: Keys, service: ProjectorService, clock: Clock
) -> None:
    """Kills: ``expire_run_streams`` unlinking only the stream (its meta hash, the run's phase for
    the append script, would outlive it)."""
    store = EventStore(redis, keys)
    clock.at = await redis_now(redis)
    run_ids = await write_runs(store, ["completed"] * 3)
    await redis.persist(keys.run(run_ids[0]))  # EXPIRE at the end is the first line; this is the backstop
    await until_caught_up(service, redis, keys.events)
    clock.at += timedelta(hours=48, minutes=30)
    assert (await service.retention().run_once())["run_streams_expired"] == 3
    for run_id in run_ids:
        assert (await redis.exists(keys.run(run_id)), await redis.exists(keys.meta(run_id))) == (0, 0)


async def test_redis_now_is_an_aware_utc_time_equal_to_redis_time(redis: Redis) -> None:
    """Aware, so that it compares with the aware times of events (a naive local time would be
    off by the host's zone, or raise on comparison)."""
    seconds, micros = await redis.time()
    now = await redis_now(redis)
    assert now.utcoffset() == timedelta(0)
    assert 0 <= millis(now) - (int(seconds) * 1000 + int(micros) // 1000) < 5000


def test_millis_is_the_epoch_milliseconds_of_any_datetime_naive_taken_as_utc() -> None:
    aware = datetime(2026, 12, 2, 11, 30, 0, 123_999, tzinfo=UTC)
    expected = 1_796_211_000_123  # a stream ID's time part for that instant
    assert millis(aware) == expected
    assert millis(aware.replace(tzinfo=None)) == expected
    assert millis(aware.astimezone(timezone(timedelta(hours=-5)))) == expected


async def test_a_replica_publishes_its_needs_stamped_with_redis_time(
    redis: Redis, keys: Keys, make_settings: Callable[..., ProjectorSettings]
) -> None:
    """What the other replicas read to decide whether this one is silent: Redis's time."""
    svc = ProjectorService(make_settings())
    await svc.start()
    try:
        needs = await svc.retention().publish()
        seconds, micros = await redis.time()
        published, at_ms = (await redis.hget(keys.projectors, svc.retention().name) or b"").decode().split()
        assert published == needs
        assert 0 <= int(seconds) * 1000 + int(micros) // 1000 - int(at_ms) < 5000
    finally:
        await svc.stop()
