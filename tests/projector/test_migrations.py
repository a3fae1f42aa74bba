"""Schema migrations: a database of the previous version keeps its data at the current one."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import msgspec
from redis.asyncio import Redis

from services.projector.db import open_db
from services.projector.queries import Queries
from services.projector.rows import COLUMNS, row_of
from services.projector.schema import CURRENT_VERSION, migrate
from shared.keys import Keys
from shared.store import EventStore
from tests.projector.support import db_states, folded, write_runs

V1_COLUMNS = ("run_id", "user_id", "symbol", "status", "requested_us", "updated_us", "last_event_id", "state")


async def test_a_v1_database_with_data_migrates_and_keeps_it(
    redis: Redis, keys: Keys, tmp_path: Path
) -> None:
    store = EventStore(redis, keys)
    run_ids = await write_runs(store, ["completed", "failed", "running", "queued"])
    states = await folded(store, run_ids)
    path = tmp_path / "old.db"
    assert migrate(path, target=1) == 1
    with sqlite3.connect(path) as db:
        for state in states.values():
            row = dict(zip(COLUMNS, row_of(state, msgspec.json.encode(state)), strict=True))
            db.execute(
                f"INSERT INTO runs ({', '.join(V1_COLUMNS)}) VALUES ({', '.join('?' for _ in V1_COLUMNS)})",
                [row[c] for c in V1_COLUMNS],
            )
        db.execute("UPDATE checkpoint SET last_id = '123-4', applied = 40")

    assert migrate(path) == CURRENT_VERSION
    assert migrate(path) == CURRENT_VERSION  # applied once only

    assert db_states(path) == states
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT last_id, applied FROM checkpoint").fetchone() == ("123-4", 40)
        for run_id, state in states.items():
            select = f"SELECT {', '.join(COLUMNS)} FROM runs WHERE run_id = ?"
            stored = db.execute(select, (run_id,)).fetchone()
            assert stored == row_of(state, stored[-1].encode())  # new columns backfilled exactly
            steps = db.execute("SELECT steps FROM runs WHERE run_id = ?", (run_id,)).fetchone()[0]
            assert msgspec.json.decode(steps) == msgspec.to_builtins(state.steps)
        assert db.execute("SELECT count(*) FROM runs_archive").fetchone() == (0,)
    reader = await open_db(path, readonly=True)
    try:
        page = await Queries(reader).page("alice", symbol=None, status="active", limit=10, cursor=None)
        assert len(page.states) == 2
    finally:
        await reader.close()
