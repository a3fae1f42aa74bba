"""The fold into SQLite: exactly once, unknown and malformed entries skipped and counted."""

from __future__ import annotations

from pathlib import Path

from redis.asyncio import Redis

from services.projector.db import open_db
from services.projector.projection import Projection
from services.projector.schema import migrate
from shared.keys import Keys
from shared.store import EventStore
from tests.projector.support import checksum, db_states, folded, write_runs


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
