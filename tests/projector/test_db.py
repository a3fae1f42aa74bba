"""The one SQLite transaction helper: everything in the block commits together or not at all."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from services.projector.db import open_db, sync_transaction, transaction


async def test_a_failing_block_rolls_back_everything_and_a_passing_one_commits(tmp_path: Path) -> None:
    db = await open_db(tmp_path / "t.db")
    try:
        await db.execute("CREATE TABLE t (x INTEGER PRIMARY KEY)")
        with pytest.raises(sqlite3.IntegrityError):
            async with transaction(db):
                await db.execute("INSERT INTO t VALUES (1)")
                await db.execute("INSERT INTO t VALUES (1)")
        assert not db.in_transaction
        async with transaction(db):
            await db.execute("INSERT INTO t VALUES (2)")
        assert not db.in_transaction
        async with db.execute("SELECT x FROM t") as cursor:
            assert await cursor.fetchall() == [(2,)]
    finally:
        await db.close()


def test_the_blocking_form_rolls_back_too(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "t.db", isolation_level=None)
    try:
        conn.execute("CREATE TABLE t (x INTEGER PRIMARY KEY)")
        with pytest.raises(sqlite3.IntegrityError), sync_transaction(conn):
            conn.execute("INSERT INTO t VALUES (1)")
            conn.execute("INSERT INTO t VALUES (1)")
        with sync_transaction(conn):
            conn.execute("INSERT INTO t VALUES (2)")
        assert not conn.in_transaction
        assert conn.execute("SELECT x FROM t").fetchall() == [(2,)]
    finally:
        conn.close()
