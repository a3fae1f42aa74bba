"""Exactly once, deterministically: a failure between a batch's rows and its checkpoint (a SQLite
trigger that fails the checkpoint update) leaves neither, so the batch is applied again once."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from services.projector.db import open_db
from services.projector.projection import Projection
from services.projector.schema import migrate
from shared import streamids
from shared.keys import Keys
from shared.store import EventStore
from tests.projector.support import db_states, folded, write_runs

_FAIL_CHECKPOINT = """
CREATE TRIGGER fail_checkpoint BEFORE UPDATE ON checkpoint
BEGIN SELECT RAISE(ABORT, 'injected: the checkpoint write failed'); END
"""


def _sql(path: Path, statement: str) -> None:
    with sqlite3.connect(path) as db:
        db.execute(statement)


async def _apply(path: Path, entries: list[Any]) -> Projection:
    """A projector's start: load the checkpoint, apply the log; the connection is closed after."""
    projection = Projection(await open_db(path))
    try:
        await projection.load()
        await projection.apply(entries)
    finally:
        await projection.db.close()
    return projection


async def test_a_failed_checkpoint_write_rolls_the_rows_back_and_the_retry_applies_once(
    redis: Redis, keys: Keys, tmp_path: Path
) -> None:
    """Kills: rows and checkpoint committed in two transactions in ``Projection._commit`` (the rows
    stay, the retry folds the finished runs' events a second time: usage and steps doubled)."""
    store = EventStore(redis, keys)
    run_ids = await write_runs(store, ["completed", "failed", "running", "cancel-queued"])
    entries: list[Any] = list(await redis.xrange(keys.events) or ())
    path = tmp_path / "db.sqlite"
    migrate(path)
    _sql(path, _FAIL_CHECKPOINT)

    with pytest.raises(sqlite3.IntegrityError, match="injected"):
        await _apply(path, entries)
    assert db_states(path) == {}, "the rows were committed without their checkpoint"

    _sql(path, "DROP TRIGGER fail_checkpoint")
    projection = await _apply(path, entries)
    assert projection.checkpoint == entries[-1][0].decode()
    assert db_states(path) == await folded(store, run_ids)
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT applied FROM checkpoint").fetchone() == (len(entries),)
    assert streamids.parse(projection.checkpoint) > streamids.parse(streamids.ZERO)
