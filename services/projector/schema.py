"""The read models' schema and its versioned migrations, applied in order at start."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import msgspec

from services.projector.db import sync_transaction
from services.projector.rows import COLUMNS, redis_ms, row_of, upsert_sql
from shared.run_state import RunState

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    run: Callable[[sqlite3.Connection], None]


_V1 = """
CREATE TABLE runs (
    run_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    symbol TEXT NOT NULL,
    status TEXT NOT NULL,
    requested_us INTEGER NOT NULL,
    updated_us INTEGER NOT NULL,
    last_event_id TEXT NOT NULL,
    state TEXT NOT NULL
);
CREATE INDEX runs_by_user ON runs (user_id, requested_us DESC, run_id DESC);
CREATE TABLE checkpoint (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    last_id TEXT NOT NULL,
    applied INTEGER NOT NULL DEFAULT 0,
    skipped INTEGER NOT NULL DEFAULT 0
);
INSERT INTO checkpoint (id, last_id) VALUES (1, '0-0');
"""

_V2_COLUMNS = tuple(c for c in COLUMNS if c != "logged_ms")
"""The stored columns as of v2: today's minus those later migrations add."""
_GENERATED = ("analysts", "steps", "result", "requested_at", "started_at", "completed_at", "updated_at")
_V2 = """
ALTER TABLE runs ADD COLUMN model_id TEXT NOT NULL DEFAULT '';
ALTER TABLE runs ADD COLUMN current_step TEXT;
ALTER TABLE runs ADD COLUMN progress REAL NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN attempt INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN runner_id TEXT;
ALTER TABLE runs ADD COLUMN started_us INTEGER;
ALTER TABLE runs ADD COLUMN completed_us INTEGER;
ALTER TABLE runs ADD COLUMN duration_s REAL;
ALTER TABLE runs ADD COLUMN queue_wait_s REAL;
ALTER TABLE runs ADD COLUMN llm_calls INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN prompt_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN completion_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN cost_usd REAL NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN error_code TEXT;
ALTER TABLE runs ADD COLUMN error_message TEXT;
CREATE INDEX runs_by_symbol ON runs (user_id, symbol, status, requested_us DESC, run_id DESC);
CREATE INDEX runs_active ON runs (user_id, requested_us DESC, run_id DESC)
    WHERE status IN ('pending', 'running');
CREATE INDEX runs_ended ON runs (updated_us) WHERE status NOT IN ('pending', 'running');
CREATE TABLE runs_archive (
    run_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    symbol TEXT NOT NULL,
    status TEXT NOT NULL,
    requested_us INTEGER NOT NULL,
    updated_us INTEGER NOT NULL,
    last_event_id TEXT NOT NULL,
    state TEXT NOT NULL,
    archived_us INTEGER NOT NULL
);
CREATE INDEX runs_archive_by_user ON runs_archive (user_id, requested_us DESC, run_id DESC);
"""


def _v1(conn: sqlite3.Connection) -> None:
    _script(conn, _V1)


def _v2(conn: sqlite3.Connection) -> None:
    _script(conn, _V2)
    for name in _GENERATED:  # derived from the exact state on read: no cost on the write path
        conn.execute(
            f"ALTER TABLE runs ADD COLUMN {name} TEXT "
            f"GENERATED ALWAYS AS (json_extract(state, '$.{name}')) VIRTUAL"
        )
    _backfill_columns(conn, _V2_COLUMNS)


_V3 = """
CREATE TABLE reconciled (
    run_id TEXT PRIMARY KEY,
    requeues INTEGER NOT NULL DEFAULT 0,
    lost_us INTEGER,
    acted_us INTEGER NOT NULL
)
"""
"""What reconciliation did to runs Redis lost (services/projector/reconcile.py): its own record,
not derived from the log, so a run is re-queued at most once even if the re-queue is lost too."""


def _v3(conn: sqlite3.Connection) -> None:
    _script(conn, _V3)


_V4 = """
ALTER TABLE runs ADD COLUMN logged_ms INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs_archive ADD COLUMN logged_ms INTEGER NOT NULL DEFAULT 0;
DROP INDEX runs_ended;
CREATE INDEX runs_ended ON runs (logged_ms) WHERE status NOT IN ('pending', 'running')
"""
"""Ages on Redis's clock: retention and reconciliation compare ``logged_ms`` (the log entry's time),
not ``updated_us`` (the last event's ``at``, the appending process's clock, kept for display)."""


def _v4(conn: sqlite3.Connection) -> None:
    _script(conn, _V4)
    for table in ("runs", "runs_archive"):  # the run-stream ID: stamped by the same append, on Redis
        rows = conn.execute(f"SELECT run_id, last_event_id, updated_us FROM {table}").fetchall()
        stamps = [(redis_ms(str(event_id), int(updated_us)), run_id) for run_id, event_id, updated_us in rows]
        conn.executemany(f"UPDATE {table} SET logged_ms = ? WHERE run_id = ?", stamps)


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "runs and checkpoint", _v1),
    Migration(2, "run columns, query indexes, archive", _v2),
    Migration(3, "reconciliation record", _v3),
    Migration(4, "ages on Redis's clock", _v4),
)
CURRENT_VERSION = MIGRATIONS[-1].version


def migrate(path: Path, target: int = CURRENT_VERSION) -> int:
    """Bring the database at ``path`` to ``target``, one transaction per migration."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        current = version_of(conn)
        for migration in MIGRATIONS:
            if current < migration.version <= target:
                _apply(conn, migration)
                current = migration.version
        return current
    finally:
        conn.close()


def version_of(conn: sqlite3.Connection) -> int:
    """The schema version a database is at (0 for an empty one)."""
    row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def _apply(conn: sqlite3.Connection, migration: Migration) -> None:
    logger.info("migrating read models to v%d: %s", migration.version, migration.name)
    with sync_transaction(conn):
        migration.run(conn)
        conn.execute("INSERT INTO schema_version VALUES (?)", (migration.version,))


def _script(conn: sqlite3.Connection, sql: str) -> None:
    """Run statements one by one (executescript would commit the open transaction)."""
    for statement in sql.split(";"):
        if statement.strip():
            conn.execute(statement)


def _backfill_columns(conn: sqlite3.Connection, columns: tuple[str, ...]) -> None:
    """Rewrite ``columns`` (those the schema has at this version) of every run from its state."""
    decoder = msgspec.json.Decoder(RunState)
    keep = [COLUMNS.index(c) for c in columns]
    rows = conn.execute("SELECT state FROM runs").fetchall()
    full = (row_of(decoder.decode(state), state.encode()) for (state,) in rows)
    conn.executemany(upsert_sql(columns), [tuple(row[i] for i in keep) for row in full])
