"""Consistent copies of the read models (SQLite backup API), named by the checkpoint they hold."""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import uuid
from pathlib import Path

import msgspec

from shared import streamids

logger = logging.getLogger(__name__)

PREFIX, SUFFIX = "snapshot-", ".db"


class Snapshot(msgspec.Struct, frozen=True):
    path: Path
    checkpoint: str


def take(db_path: Path, snapshot_dir: Path, keep: int) -> Snapshot:
    """Copy the database into ``snapshot-<checkpoint>.db`` and keep only the ``keep`` newest.

    Blocking (run it in a thread): the backup reads a committed state page by page while the
    writer goes on (WAL), and the name comes from the checkpoint row inside the copy itself.
    """
    snapshot_dir.mkdir(parents=True, exist_ok=True)
    tmp = snapshot_dir / f".{PREFIX}{uuid.uuid4().hex}.tmp"
    try:
        copy(db_path, tmp)
        final = snapshot_dir / f"{PREFIX}{checkpoint_of(tmp)}{SUFFIX}"
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    _prune(snapshot_dir, keep)
    snapshot = Snapshot(final, checkpoint_of(final))
    logger.info("snapshot %s at checkpoint %s", final.name, snapshot.checkpoint)
    return snapshot


def copy(source: Path, target: Path) -> None:
    """A consistent copy of ``source`` into a new file ``target`` (no WAL left beside it)."""
    src, dst = sqlite3.connect(source), sqlite3.connect(target)
    try:
        src.backup(dst)
        dst.execute("PRAGMA journal_mode=DELETE")
    finally:
        dst.close()
        src.close()


def checkpoint_of(path: Path) -> str:
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        row = db.execute("SELECT last_id FROM checkpoint WHERE id = 1").fetchone()
    return str(row[0]) if row else streamids.ZERO


def listing(snapshot_dir: Path) -> list[Snapshot]:
    """Snapshots in the folder, oldest first."""
    found = []
    for path in snapshot_dir.glob(f"{PREFIX}*{SUFFIX}"):
        name = path.name.removeprefix(PREFIX).removesuffix(SUFFIX)
        with contextlib.suppress(ValueError):
            streamids.parse(name)
            found.append(Snapshot(path, name))
    return sorted(found, key=lambda s: streamids.parse(s.checkpoint))


def latest(snapshot_dir: Path) -> Snapshot | None:
    found = listing(snapshot_dir) if snapshot_dir.is_dir() else []
    return found[-1] if found else None


def install(source: Path, db_path: Path) -> None:
    """Put a finished database file in place of ``db_path`` atomically (its writer is stopped).

    The old WAL and shared-memory files go first: a stale WAL must never be replayed onto the
    new file. A crash in between leaves the old database at its last checkpointed state, which
    is consistent with its own checkpoint row, so the projector simply re-reads from there.
    """
    db_path.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("-wal", "-shm"):
        Path(f"{db_path}{suffix}").unlink(missing_ok=True)
    os.replace(source, db_path)
    fd = os.open(db_path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def restore(snapshot: Snapshot, db_path: Path) -> None:
    """Install a copy of ``snapshot`` as the database (the snapshot itself stays)."""
    staging = db_path.with_name(f"{db_path.name}.restore-{uuid.uuid4().hex}")
    try:
        copy(snapshot.path, staging)
        install(staging, db_path)
    finally:
        staging.unlink(missing_ok=True)
    logger.info("restored read models from %s", snapshot.path.name)


def _prune(snapshot_dir: Path, keep: int) -> None:
    for old in listing(snapshot_dir)[:-keep]:
        old.path.unlink(missing_ok=True)
