"""The pipelined consumer loop: read-ahead, growing batches, late acks, failures mid-pipeline."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import msgspec
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Tracer
from redis.asyncio import Redis

from services.projector.consumer import Consumer
from services.projector.db import open_db
from services.projector.projection import BatchOutcome, Projection, RawEntry
from services.projector.schema import migrate
from shared.events import EventCodec
from shared.ids import new_run_id
from shared.keys import PROJECTOR_GROUP, Keys
from shared.store import EventStore
from shared.telemetry import current_traceparent
from tests.projector.support import db_states, folded, plan, write, write_runs

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


def _consumer(
    projection: Projection, redis: Redis, reader: Redis, keys: Keys, tracer: Tracer | None = None, **kw: int
) -> Consumer:
    return Consumer(
        projection, redis, reader, keys, consumer="c1", batch_wait_ms=20, lock=asyncio.Lock(),
        batch_size=kw.get("batch_size", 4), batch_max=kw.get("batch_max", 32), tracer=tracer,
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
    redis: Redis,
    redis_url: str,
    keys: Keys,
    projection: Projection,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
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

        async def failed_with_read_ahead() -> bool:  # it fails, backs off, fails again…
            failed = any("batch failed" in r.getMessage() for r in caplog.records)
            return failed and (await redis.xpending(keys.events, PROJECTOR_GROUP))["pending"] > 0

        deadline = asyncio.get_running_loop().time() + 10
        while not await failed_with_read_ahead():
            assert asyncio.get_running_loop().time() < deadline, "the doomed batch never failed"
            await asyncio.sleep(0.02)
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


async def test_each_batch_is_a_span_linked_to_the_traces_of_its_runs(
    redis: Redis, redis_url: str, keys: Keys, projection: Projection
) -> None:
    provider, exporter = TracerProvider(), InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    store = EventStore(redis, keys)
    traces: set[int] = set()
    for ending in ("completed", "running", "queued"):
        with tracer.start_as_current_span("submit") as span:  # as the gateway does: one trace a run
            traces.add(span.get_span_context().trace_id)
            for event in plan(new_run_id(), ending):
                await write(store, msgspec.structs.replace(event, traceparent=current_traceparent()))
    reader = Redis.from_url(redis_url)
    try:
        consumer = _consumer(projection, redis, reader, keys, tracer=tracer, batch_size=100, batch_max=100)
        await consumer.prepare()
        await _run_until(consumer, projection, redis, keys.events)
    finally:
        await reader.aclose()
    batches = [s for s in exporter.get_finished_spans() if s.name == "projector.apply_batch"]
    assert batches
    linked = {link.context.trace_id for s in batches for link in s.links}
    assert linked == traces
    attributes = batches[0].attributes or {}
    log: Any = await redis.xrange(keys.events)
    assert attributes["messaging.batch.message_count"] == len(log)
    assert attributes["tickertape.batch.first_id"] == log[0][0].decode()
    assert attributes["tickertape.batch.last_id"] == log[-1][0].decode()


async def test_a_batch_is_acknowledged_and_no_entry_read_after_it(
    redis: Redis, redis_url: str, keys: Keys, projection: Projection, tmp_path: Path
) -> None:
    """One XACK (2,400 IDs) acknowledges exactly a batch's entries and leaves
    the batch read ahead of it pending until that one is applied."""
    codec, pipe = EventCodec(), redis.pipeline(transaction=False)
    for index, event in enumerate(e for _ in range(210) for e in plan(new_run_id(), "completed")):
        pipe.xadd(keys.events, {"e": codec.encode(event), "r": event.run_id, "s": f"{index + 1}-0"})
    await pipe.execute()
    reader = Redis.from_url(redis_url)
    try:
        consumer = _consumer(projection, redis, reader, keys)
        await consumer.prepare()
        first: Any = await redis.xreadgroup(PROJECTOR_GROUP, "c1", {keys.events: ">"}, count=2400)
        then: Any = await redis.xreadgroup(PROJECTOR_GROUP, "c1", {keys.events: ">"}, count=100)
        batch, ahead = first[0][1], then[0][1]
        await consumer.handle(batch)
        pending = await redis.xpending_range(keys.events, PROJECTOR_GROUP, "-", "+", 10_000)
        assert [p["message_id"] for p in pending] == [entry_id for entry_id, _ in ahead]
        await consumer.handle(ahead)
        assert (await redis.xpending(keys.events, PROJECTOR_GROUP))["pending"] == 0
    finally:
        await reader.aclose()
    assert len(batch) == 2400
    assert _applied(tmp_path / "db.sqlite") == 2500  # of 2,520 written
