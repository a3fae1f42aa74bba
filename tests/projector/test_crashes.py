"""Killed projectors (SIGKILL, mid-batch or between batches) restart and apply nothing twice."""

from __future__ import annotations

import asyncio
import itertools
import random
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx
import redis as sync_redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from shared.events import AnyEvent
from shared.ids import new_run_id
from shared.keys import Keys
from shared.redis_io import connect
from shared.store import EventStore
from tests.projector.conftest import projector_env
from tests.projector.support import ENDINGS, db_states, folded, plan, wait_caught_up, write, write_runs
from tests.support.processes import ServiceProcess

MakeProcess = Callable[..., ServiceProcess]
KEYS = Keys("tt:")


def _applied_count(db_path: Path) -> int:
    with sqlite3.connect(db_path) as db:
        return int(db.execute("SELECT applied + skipped FROM checkpoint").fetchone()[0])


async def _write_all(url: str, events: Sequence[AnyEvent]) -> None:
    client = connect(url)
    try:
        store = EventStore(client, KEYS)
        for event in events:
            await write(store, event)
    finally:
        await client.aclose()


async def _expected(url: str, run_ids: Sequence[str]) -> tuple[dict[str, object], int, str]:
    client = connect(url)
    try:
        store = EventStore(client, KEYS)
        head = await client.xrevrange(KEYS.events, count=1)
        return dict(await folded(store, run_ids)), int(await client.xlen(KEYS.events)), head[0][0].decode()
    finally:
        await client.aclose()


def _interleave(runs: list[list[AnyEvent]], rng: random.Random) -> list[AnyEvent]:
    """A random merge that keeps each run's own order."""
    queues = [list(events) for events in runs]
    merged: list[AnyEvent] = []
    while any(queues):
        merged.append(rng.choice([q for q in queues if q]).pop(0))
    return merged


async def test_killed_between_batches_applies_nothing_twice(
    redis: Redis, keys: Keys, make_process: MakeProcess, state_dir: Path
) -> None:
    store = EventStore(redis, keys)
    run_ids = await write_runs(store, ["completed", "failed", "cancelled", "running", "queued", "completed"])
    projector = make_process(TT_PROJECTOR_BATCH_SIZE="4").start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and projector.process is not None:
        body = projector_checkpoint(projector)
        if body != "0-0":
            break
    projector.kill()  # somewhere between (or inside) batches, with a backlog left
    db_path = state_dir / "projector" / "tickertape.db"
    partial = _applied_count(db_path)
    # As if it had died after each COMMIT but before its XACK: everything comes again.
    await redis.xgroup_setid(keys.events, "projector", "0")
    projector.start()
    head = (await redis.xrevrange(keys.events, count=1))[0][0].decode()
    wait_caught_up(projector.url, head)
    assert db_states(db_path) == await folded(store, run_ids)
    assert _applied_count(db_path) == await redis.xlen(keys.events)  # each entry counted once
    assert 0 < partial <= await redis.xlen(keys.events)


def projector_checkpoint(projector: ServiceProcess) -> str:
    try:
        return str(httpx.get(f"{projector.url}/internal/checkpoint", timeout=1).json()["last_id"])
    except httpx.HTTPError:
        return "0-0"


@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    endings=st.lists(st.sampled_from(ENDINGS), min_size=2, max_size=4),
    seed=st.integers(0, 2**32 - 1),
    batch_size=st.integers(1, 6),
    kills=st.lists(st.floats(0.0, 0.15), min_size=1, max_size=2),
)
def test_read_model_equals_fold_whatever_the_crashes(
    redis_url: str, endings: list[str], seed: int, batch_size: int, kills: list[float]
) -> None:
    rng = random.Random(seed)
    sync_redis.Redis.from_url(redis_url).flushdb()
    run_ids = [new_run_id() for _ in endings]
    events = _interleave([plan(r, e) for r, e in zip(run_ids, endings, strict=True)], rng)
    chunks = _split(events, len(kills) + 1, rng)
    state_dir = Path(tempfile.mkdtemp(prefix="tt-projector-"))
    env = projector_env(redis_url, state_dir, TT_PROJECTOR_BATCH_SIZE=str(batch_size))
    projector = ServiceProcess("projector", env, log_dir=state_dir)
    try:
        asyncio.run(_write_all(redis_url, chunks[0]))
        projector.start()
        for delay, chunk in zip(kills, chunks[1:], strict=True):
            asyncio.run(_write_all(redis_url, chunk))
            time.sleep(delay)
            projector.kill()  # SIGKILL: wherever it is, inside a transaction or between two
            projector.start()
        expected, length, head = asyncio.run(_expected(redis_url, run_ids))
        wait_caught_up(projector.url, head)
        db_path = state_dir / "projector" / "tickertape.db"
        assert db_states(db_path) == expected
        assert _applied_count(db_path) == length
    finally:
        projector.stop()
        shutil.rmtree(state_dir, ignore_errors=True)


def _split(events: list[AnyEvent], parts: int, rng: random.Random) -> list[list[AnyEvent]]:
    cuts = sorted(rng.randint(0, len(events)) for _ in range(parts - 1))
    bounds = [0, *cuts, len(events)]
    return [events[a:b] for a, b in itertools.pairwise(bounds)]
