"""The fold into SQLite: exactly once, unknown and malformed entries skipped and counted, every
shape of log entry a Redis client returns read alike."""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path
from typing import Any

import msgspec
from redis.asyncio import Redis

from services.projector.db import open_db
from services.projector.projection import MAX_TRACES, BatchOutcome, Projection
from services.projector.schema import migrate
from shared import streamids
from shared.events import EventCodec, RunCancelled, RunFailed
from shared.ids import new_run_id
from shared.keys import Keys
from shared.store import EventStore
from tests.projector.support import checksum, db_states, folded, lose, plan, write, write_runs


async def _projection(path: Path) -> Projection:
    migrate(path)
    projection = Projection(await open_db(path))
    await projection.load()
    return projection


async def test_unknown_and_malformed_entries_are_skipped_and_counted(
    redis: Redis, keys: Keys, tmp_path: Path
) -> None:
    store = EventStore(redis, keys)
    [first] = await write_runs(store, ["running"])
    await redis.xadd(keys.events, {"e": b'{"type":"RunExploded","run_id":"x","v":9}', "r": "x", "s": "1-1"})
    malformed = await redis.xadd(keys.events, {"e": b"not json at all", "r": "x", "s": "1-2"})
    await redis.xadd(keys.events, {"r": "x"})
    [second] = await write_runs(store, ["completed"])
    projection = await _projection(tmp_path / "db.sqlite")
    try:
        outcome = await projection.apply(await redis.xrange(keys.events))
        assert outcome.skipped == {"unknown": 1, "malformed": 2}
        assert projection.checkpoint == (await redis.xrevrange(keys.events, count=1))[0][0].decode()
        assert malformed.decode() != projection.checkpoint
    finally:
        await projection.db.close()
    assert db_states(tmp_path / "db.sqlite") == await folded(store, [first, second])


async def test_applying_the_same_entries_again_changes_nothing(
    redis: Redis, keys: Keys, tmp_path: Path
) -> None:
    store = EventStore(redis, keys)
    run_ids = await write_runs(store, ["completed", "running", "cancel-queued"])
    entries = await redis.xrange(keys.events)
    projection = await _projection(tmp_path / "db.sqlite")
    try:
        await projection.apply(entries[:10])
        await projection.apply(entries)
        before = checksum(tmp_path / "db.sqlite")
        again = await projection.apply(entries)
        assert (again.applied, again.duplicates) == (0, len(entries))
        assert checksum(tmp_path / "db.sqlite") == before
    finally:
        await projection.db.close()
    fresh = await _projection(tmp_path / "db.sqlite")  # a restart reads the checkpoint back
    try:
        assert (await fresh.apply(entries)).applied == 0
    finally:
        await fresh.db.close()
    assert db_states(tmp_path / "db.sqlite") == await folded(store, run_ids)


def _logged_ms(db_path: Path) -> dict[str, int]:
    with sqlite3.connect(db_path) as db:
        return {str(r): int(ms) for r, ms in db.execute("SELECT run_id, logged_ms FROM runs")}


async def _apply_all(path: Path, entries: Any) -> BatchOutcome:
    projection = await _projection(path)
    try:
        return await projection.apply(entries)
    finally:
        await projection.db.close()


async def test_the_log_folds_alike_in_every_shape_a_redis_client_returns_it(
    redis: Redis, redis_url: str, keys: Keys, tmp_path: Path
) -> None:
    """Parsed (bytes keys), raw flat lists (the consumer's own reader), decoded to str, and raw
    lists in another field order than the append script's: the same rows, aged by the log."""
    store = EventStore(redis, keys)
    run_ids = await write_runs(store, ["completed", "running"])
    parsed: Any = await redis.xrange(keys.events)
    for _, fields in parsed:  # the same entries, as another writer might order their fields
        extra = {b"x": b"1", b"y": b"2", b"z": b"3"}  # six fields, as many as the append script's list
        reordered = {b"s": fields[b"s"], **extra, b"r": fields[b"r"], b"e": fields[b"e"]}
        await redis.xadd("reordered", reordered)
    raw_client, text_client = Redis.from_url(redis_url), Redis.from_url(redis_url, decode_responses=True)
    raw_client.set_response_callback("XRANGE", lambda response, **_: response)
    try:
        shapes = {
            "parsed": parsed,
            "raw": await raw_client.xrange(keys.events),
            "text": await text_client.xrange(keys.events),
            "reordered": await raw_client.xrange("reordered"),
            "reordered, parsed": await redis.xrange("reordered"),
        }
    finally:
        await raw_client.aclose()
        await text_client.aclose()
    assert type(shapes["raw"][0][1]) is list and type(shapes["reordered"][0][1]) is list
    expected = await folded(store, run_ids)
    last_ms = {f[b"r"].decode(): streamids.millis(i.decode()) for i, f in parsed}
    for shape, entries in shapes.items():
        outcome = await _apply_all(tmp_path / f"{shape}.sqlite", entries)
        assert (outcome.applied, outcome.skipped) == (len(parsed), {}), shape
        assert db_states(tmp_path / f"{shape}.sqlite") == expected, shape
        if not shape.startswith("reordered"):  # logged later, under other IDs
            assert _logged_ms(tmp_path / f"{shape}.sqlite") == last_ms, shape


async def test_entries_without_run_or_source_fields_fall_back_to_the_event_and_the_log_id(
    redis: Redis, keys: Keys, tmp_path: Path
) -> None:
    """A log written without the ``r``/``s`` fields (an earlier version's): the run ID comes from
    the event, the event ID from the global log, in dict and raw form alike."""
    codec = EventCodec()
    [bare, no_source] = ["bare", "nosource"]
    source = await redis.xadd(keys.events, {"e": codec.encode(plan(bare, "queued")[0])})
    await redis.xadd(keys.events, {"e": codec.encode(plan(no_source, "queued")[0]), "r": no_source})
    last = await redis.xadd(keys.events, {"e": codec.encode(plan(no_source, "cancel-queued")[1])})
    entries: Any = await redis.xrange(keys.events)
    raw = [(i, [k for pair in f.items() for k in pair]) for i, f in entries]
    for shape, batch in (("dict", entries), ("raw", raw)):
        await _apply_all(tmp_path / f"{shape}.sqlite", batch)
        states = db_states(tmp_path / f"{shape}.sqlite")
        assert set(states) == {bare, no_source}, shape
        assert states[bare].last_event_id == source.decode(), shape
        assert (states[no_source].status, states[no_source].last_event_id) == ("cancelled", last.decode())


async def test_an_entry_deleted_from_the_log_is_skipped_as_deleted(
    redis: Redis, redis_url: str, keys: Keys, tmp_path: Path
) -> None:
    """A pending entry XDELed before the consumer re-reads it comes back without fields."""
    store = EventStore(redis, keys)
    await redis.xgroup_create(keys.events, "g", id="0", mkstream=True)
    [run_id] = await write_runs(store, ["queued"])
    doomed = await redis.xadd(keys.events, {"e": b"{}", "r": run_id})
    await redis.xreadgroup("g", "c", {keys.events: ">"})
    await redis.xdel(keys.events, doomed)
    reader = Redis.from_url(redis_url)
    reader.set_response_callback("XREADGROUP", lambda response, **_: response)
    try:
        reply: Any = await reader.xreadgroup("g", "c", {keys.events: "0"})
    finally:
        await reader.aclose()
    entries = list(next(iter(reply.values())) if isinstance(reply, dict) else reply[0][1])  # RESP3, RESP2
    assert entries[-1][1] is None
    outcome = await _apply_all(tmp_path / "db.sqlite", entries)
    assert (outcome.applied, outcome.skipped, outcome.last_id) == (1, {"deleted": 1}, doomed.decode())
    assert db_states(tmp_path / "db.sqlite") == await folded(store, [run_id])


async def test_a_requeued_run_starts_over_and_an_ended_one_is_not_reopened(
    redis: Redis, keys: Keys, tmp_path: Path
) -> None:
    """Reconciliation re-submits the request of a run Redis lost: an active run starts over from
    it, as its new stream does; a request for a run that already ended changes nothing."""
    store = EventStore(redis, keys)
    active, ended = await write_runs(store, ["running", "completed"])
    for run_id in (active, ended):
        await lose(redis, keys, run_id)
        await store.submit(plan(run_id, "queued")[0])
    await _apply_all(tmp_path / "db.sqlite", await redis.xrange(keys.events))
    states = db_states(tmp_path / "db.sqlite")
    assert states[active] == (await folded(store, [active]))[active]
    assert states[active].status == "pending"
    assert {step.status for step in states[active].steps} == {"pending"}  # the plan reset
    assert states[ended].status == "completed"


async def test_a_batch_links_each_trace_once_and_at_most_max_traces(
    redis: Redis, keys: Keys, tmp_path: Path
) -> None:
    store = EventStore(redis, keys)
    traces = [f"{uuid.uuid4().hex}" for _ in range(MAX_TRACES + 2)]
    for trace in traces:
        for span in range(2):  # two events of one trace: one link
            event = plan(new_run_id(), "queued")[0]
            await store.submit(msgspec.structs.replace(event, traceparent=f"00-{trace}-{span + 1:016x}-01"))
    outcome = await _apply_all(tmp_path / "db.sqlite", await redis.xrange(keys.events))
    assert len(outcome.traces) == MAX_TRACES
    assert set(outcome.traces) <= set(traces)
    assert all(tp.startswith(f"00-{t}-") for t, tp in outcome.traces.items())


async def test_the_writer_keeps_only_live_runs_in_memory_and_at_most_its_cache_size(
    redis: Redis, keys: Keys, tmp_path: Path
) -> None:
    """The states the writer caches between batches are bounded: a finished run is dropped at
    once, and a batch that would overfill the cache empties it first. A restarted writer
    continues every run from the database."""
    store = EventStore(redis, keys)
    path = tmp_path / "db.sqlite"
    migrate(path)

    async def batch(projection: Projection) -> set[str]:
        await projection.apply(await redis.xrange(keys.events, min=f"({projection.checkpoint}"))
        return set(projection._cache)

    projection = Projection(await open_db(path), cache_size=3)
    try:
        await projection.load()
        a, b, c = await write_runs(store, ["running", "completed", "queued"])
        assert await batch(projection) == {a, c}
        await write(store, RunFailed(run_id=a, code="boom", message="it broke"))
        assert await batch(projection) == {c}  # 2 cached + 1 touched: full, not over
        more = await write_runs(store, ["running"] * 3)
        assert await batch(projection) == set(more)  # 1 + 3 would overfill: emptied first
    finally:
        await projection.db.close()
    restarted = Projection(await open_db(path))
    try:
        await restarted.load()
        await write(store, RunCancelled(run_id=c, user_id="alice"))
        await batch(restarted)
    finally:
        await restarted.db.close()
    assert db_states(path) == await folded(store, [a, b, c, *more])
