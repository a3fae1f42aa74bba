"""The read models' SQLite connections and the one way to write them: ``transaction``.

Connections run in autocommit mode (``isolation_level=None``) so that every write is an explicit
``BEGIN IMMEDIATE … COMMIT``: the write lock is taken up front, not upgraded half-way through a
transaction (which could fail with SQLITE_BUSY after work was done), and a failure anywhere
rolls the whole transaction back.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiosqlite

_PRAGMAS = ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL", "PRAGMA busy_timeout=5000")
_READONLY = ("PRAGMA query_only=ON",)


async def open_db(path: Path, *, readonly: bool = False) -> aiosqlite.Connection:
    """An aiosqlite connection in WAL mode, autocommit (transactions are explicit)."""
    db = await aiosqlite.connect(path, isolation_level=None)
    for pragma in _PRAGMAS + (_READONLY if readonly else ()):
        await db.execute(pragma)
    return db


@contextlib.asynccontextmanager
async def transaction(db: aiosqlite.Connection) -> AsyncIterator[aiosqlite.Connection]:
    """``BEGIN IMMEDIATE``; ``COMMIT`` when the block ends, ``ROLLBACK`` when it raises."""
    await db.execute("BEGIN IMMEDIATE")
    try:
        yield db
        await db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            await db.rollback()
        raise


@contextlib.contextmanager
def sync_transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``transaction`` for a blocking ``sqlite3`` connection (migrations run before the loop)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
