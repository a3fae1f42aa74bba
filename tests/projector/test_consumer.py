"""The pipelined consumer loop: read-ahead, growing batches, late acks, failures mid-pipeline."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from services.projector.consumer import Consumer
from services.projector.projection import BatchOutcome, Projection, RawEntry, open_db
from services.projector.schema import migrate
from shared.keys import PROJECTOR_GROUP, Keys
from shared.store import EventStore
from tests.projector.support import db_states, folded, write_runs

ENDINGS = ["completed", "failed", "cancelled", "running", "queued", "cancel-queued"] * 5


@pytest.fixture
async def projection(tmp_path: Path) -> AsyncIterator[Projection]:
    path = tmp_path / "db.sqlite"
    migrate(path)
    projection = Projection(await open_db(path))
    await projection.load()
    try:
        yield projection
    finally:
        await projection.db.close()


async def _head(redis: Redis, stream: str) -> str:
    tail: Any = await redis.xrevrange(stream, count=1)
    return str(tail[0][0].decode())


async def _run_until(consumer: Consumer, projection: Projection, redis: Redis, stream: str) -> None:
    head = await _head(redis, stream)
    stop = asyncio.Event()
    loop = asyncio.ensure_future(consumer.run(stop))
    try:
        async with asyncio.timeout(20):
            while tuple(map(int, projection.checkpoint.split("-"))) < tuple(map(int, head.split("-"))):
                await asyncio.sleep(0.01)
    finally:
        stop.set()
        async with asyncio.timeout(10):
            await loop


def _consumer(projection: Projection, redis: Redis, reader: Redis, keys: Keys, **kw: int) -> Consumer:
    return Consumer(
        projection, redis, reader, keys, consumer="c1", batch_wait_ms=20, lock=asyncio.Lock(),
        batch_size=kw.get("batch_size", 4), batch_max=kw.get("batch_max", 32),
    )  # fmt: skip


def _applied(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return int(db.execute("SELECT applied + skipped FROM checkpoint").fetchone()[0])


@pytest.mark.parametrize("protocol", [2, 3])
async def test_pipeline_applies_everything_once_and_acks_it(
    redis: Redis, redis_url: str, keys: Keys, projection: Projection, tmp_path: Path, protocol: int
) -> None:
    store = EventStore(redis, keys)
    run_ids = await write_runs(store, ENDINGS)
    reader = Redis.from_url(redis_url, protocol=protocol)  # raw replies differ by protocol
    try:
        consumer = _consumer(projection, redis, reader, keys)
        await consumer.prepare()
        await _run_until(consumer, projection, redis, keys.events)
    finally:
        await reader.aclose()
    assert db_states(tmp_path / "db.sqlite") == await folded(store, run_ids)
    assert _applied(tmp_path / "db.sqlite") == await redis.xlen(keys.events)
    assert (await redis.xpending(keys.events, PROJECTOR_GROUP))["pending"] == 0


async def test_batches_grow_during_a_backlog_up_to_the_maximum(
    redis: Redis, redis_url: str, keys: Keys, projection: Projection
) -> None:
    await write_runs(EventStore(redis, keys), ENDINGS)
    reader = Redis.from_url(redis_url)
    sizes: list[int] = []
    original = projection.apply

    async def recording(entries: Sequence[RawEntry]) -> BatchOutcome:
        sizes.append(len(entries))
        return await original(entries)

    projection.apply = recording  # type: ignore[method-assign]
    try:
        consumer = _consumer(projection, redis, reader, keys, batch_size=4, batch_max=32)
        await consumer.prepare()
        await _run_until(consumer, projection, redis, keys.events)
    finally:
        await reader.aclose()
    assert sizes[:4] == [4, 8, 16, 32]
    assert max(sizes) == 32


async def test_a_failed_commit_mid_pipeline_loses_and_repeats_nothing(
    redis: Redis, redis_url: str, keys: Keys, projection: Projection, tmp_path: Path
) -> None:
    """Batches read ahead of a failing one are re-read from the pending entries, applied once."""
    store = EventStore(redis, keys)
    run_ids = await write_runs(store, ENDINGS)
    doomed = run_ids[len(run_ids) // 2]
    db_path = tmp_path / "db.sqlite"
    with sqlite3.connect(db_path) as db:  # a real SQLite failure, for one run, until dropped
        db.execute(
            f"CREATE TRIGGER doomed BEFORE INSERT ON runs WHEN NEW.run_id = '{doomed}' "
            "BEGIN SELECT RAISE(ABORT, 'disk says no'); END"
        )
    reader = Redis.from_url(redis_url)
    try:
        consumer = _consumer(projection, redis, reader, keys)
        await consumer.prepare()
        stop = asyncio.Event()
        loop = asyncio.ensure_future(consumer.run(stop))
        await asyncio.sleep(0.5)  # it fails, backs off, fails again…
        stuck_at = projection.checkpoint
        with sqlite3.connect(db_path) as db:
            db.execute("DROP TRIGGER doomed")
        stop.set()
        await asyncio.wait_for(loop, 10)
        assert stuck_at != await _head(redis, keys.events)
        assert (await redis.xpending(keys.events, PROJECTOR_GROUP))["pending"] > 0  # read ahead, unacked
        await _run_until(consumer, projection, redis, keys.events)
    finally:
        await reader.aclose()
    assert db_states(db_path) == await folded(store, run_ids)
    assert _applied(db_path) == await redis.xlen(keys.events)
