"""Rebuild the read models into a fresh database and swap it in atomically.

From the latest snapshot plus the log after its checkpoint, or from the start of the log when
there is no snapshot (or ``from_log``). The fold is the very same code the consumer runs, so
the result equals the incremental database.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from pathlib import Path

import msgspec
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from services.projector import snapshots
from services.projector.db import open_db
from services.projector.locking import exclusive
from services.projector.projection import Projection
from services.projector.schema import migrate
from services.projector.settings import ProjectorSettings
from shared import streamids
from shared.redis_io import connect

logger = logging.getLogger(__name__)


class RebuildError(Exception):
    """The log cannot give back what the read models need."""


class RebuildReport(msgspec.Struct, frozen=True):
    source: str
    start: str
    checkpoint: str
    applied: int
    skipped: int


async def rebuild(settings: ProjectorSettings, *, from_log: bool = False) -> RebuildReport:
    """Rebuild and install the database at ``settings.db_path``; the projector must be stopped."""
    with exclusive(settings.lock_path):
        staging = settings.db_path.with_name(f"{settings.db_path.name}.rebuild-{uuid.uuid4().hex}")
        try:
            report = await _build(settings, staging, from_log=from_log)
            snapshots.install(staging, settings.db_path)
        finally:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{staging}{suffix}").unlink(missing_ok=True)
    logger.info("rebuilt read models", extra={"rebuild": msgspec.structs.asdict(report)})
    return report


async def _build(settings: ProjectorSettings, staging: Path, *, from_log: bool) -> RebuildReport:
    snapshot = None if from_log else snapshots.latest(settings.snapshot_dir)
    if snapshot is not None:
        await asyncio.to_thread(snapshots.copy, snapshot.path, staging)
    await asyncio.to_thread(migrate, staging)
    redis = connect(settings.common.redis)
    db = await open_db(staging)
    try:
        projection = Projection(db)
        start = await projection.load()
        await _check_log_covers(redis, settings.common.keys.events, start)
        applied, skipped = await replay(projection, redis, settings.common.keys.events, settings.batch_size)
        await db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        await db.close()
        await redis.aclose()
    source = snapshot.path.name if snapshot else "log"
    return RebuildReport(source, start, projection.checkpoint, applied, skipped)


async def replay(projection: Projection, redis: Redis, stream: str, batch_size: int) -> tuple[int, int]:
    """Apply the log after the projection's checkpoint up to its current end (XRANGE, no group)."""
    applied = skipped = 0
    while True:
        entries = await redis.xrange(stream, min=f"({projection.checkpoint}", max="+", count=batch_size)
        if not entries:
            return applied, skipped
        outcome = await projection.apply(entries)
        applied += outcome.applied
        skipped += sum(outcome.skipped.values())


async def _check_log_covers(redis: Redis, stream: str, start: str) -> None:
    """Refuse when Redis (7.0+) says entries after ``start`` were trimmed away."""
    try:
        info = await redis.xinfo_stream(stream)
    except ResponseError:
        return
    deleted = info.get("max-deleted-entry-id")
    if deleted is not None:
        text = deleted.decode() if isinstance(deleted, bytes) else str(deleted)
        if streamids.after(text, start):
            raise RebuildError(f"the log was trimmed up to {text}, after {start}: restore a newer snapshot")
