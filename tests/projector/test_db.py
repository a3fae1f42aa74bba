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


async def test_writes_are_autocommitted_outside_a_transaction_and_readonly_refuses_them(
    tmp_path: Path,
) -> None:
    """``open_db`` is autocommit: a statement outside ``transaction`` is visible to another
    connection at once (no implicit transaction holding it, and the write lock, open). The API's
    read-only connections cannot write at all."""
    path = tmp_path / "t.db"
    writer = await open_db(path)
    reader = await open_db(path, readonly=True)
    try:
        await writer.execute("CREATE TABLE t (x INTEGER PRIMARY KEY)")
        await writer.execute("INSERT INTO t VALUES (1)")
        assert not writer.in_transaction
        async with reader.execute("SELECT x FROM t") as cursor:
            assert await cursor.fetchall() == [(1,)]
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            await reader.execute("INSERT INTO t VALUES (2)")
    finally:
        await reader.close()
        await writer.close()
