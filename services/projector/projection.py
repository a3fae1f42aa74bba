"""Folding global-log entries into the ``runs`` read model, batch and checkpoint in one transaction."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiosqlite
import msgspec

from services.projector import streamids
from services.projector.rows import UPSERT_SQL, row_of
from shared.events import AnyEvent, EventCodec, EventError, UnknownEvent
from shared.keys import EVENT_FIELD, RUN_ID_FIELD, SOURCE_ID_FIELD
from shared.reducer import RunState, apply, initial

logger = logging.getLogger(__name__)

RawEntry = tuple[Any, Any]
"""(entry ID, fields) as redis-py returns them (bytes or str)."""

_LOAD_CHUNK = 500
_EVENT = (EVENT_FIELD.encode(), EVENT_FIELD)
_RUN_ID = (RUN_ID_FIELD.encode(), RUN_ID_FIELD)
_SOURCE_ID = (SOURCE_ID_FIELD.encode(), SOURCE_ID_FIELD)


@dataclass(slots=True)
class BatchOutcome:
    """What one batch did: applied events, skipped entries by reason, entries already applied."""

    applied: int = 0
    duplicates: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    last_id: str = streamids.ZERO

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


@dataclass(frozen=True, slots=True)
class Decoded:
    log_id: str
    run_id: str
    source_id: str
    event: AnyEvent


async def open_db(path: Path, *, readonly: bool = False) -> aiosqlite.Connection:
    """An aiosqlite connection in WAL mode, autocommit (transactions are explicit)."""
    db = await aiosqlite.connect(path, isolation_level=None)
    await db.execute("PRAGMA journal_mode=WAL")
    await db.execute("PRAGMA synchronous=NORMAL")
    await db.execute("PRAGMA busy_timeout=5000")
    if readonly:
        await db.execute("PRAGMA query_only=ON")
    return db


class Projection:
    """The writer of the read models; the only one, so it may cache active runs' states."""

    def __init__(self, db: aiosqlite.Connection, *, cache_size: int = 20_000) -> None:
        self.db = db
        self.checkpoint = streamids.ZERO
        self.codec = EventCodec()
        self._encoder = msgspec.json.Encoder()
        self._decoder = msgspec.json.Decoder(RunState)
        self._cache: dict[str, RunState] = {}
        self._cache_size = cache_size

    async def load(self) -> str:
        """Read the checkpoint (the last global-log ID applied) from the database."""
        async with self.db.execute("SELECT last_id FROM checkpoint WHERE id = 1") as cursor:
            row = await cursor.fetchone()
        self.checkpoint = str(row[0]) if row else streamids.ZERO
        return self.checkpoint

    async def apply(self, entries: Sequence[RawEntry]) -> BatchOutcome:
        """Apply the entries after the checkpoint; commit them and the new checkpoint together."""
        outcome = BatchOutcome(last_id=self.checkpoint)
        fresh = self._decode(entries, outcome)
        if outcome.last_id == self.checkpoint:
            return outcome
        states = await self._states({d.run_id for d in fresh})
        for d in fresh:
            state = states.get(d.run_id)
            states[d.run_id] = apply(initial(d.run_id) if state is None else state, d.event, d.source_id)
        dirty = {d.run_id: states[d.run_id] for d in fresh}
        outcome.applied = len(fresh)
        await self._commit(dirty, outcome)
        self.checkpoint = outcome.last_id
        self._remember(dirty)
        return outcome

    def _decode(self, entries: Sequence[RawEntry], outcome: BatchOutcome) -> list[Decoded]:
        fresh: list[Decoded] = []
        last = streamids.parse(outcome.last_id)
        for raw_id, fields in entries:
            log_id = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
            position = streamids.parse(log_id)
            if position <= last:
                outcome.duplicates += 1
                continue
            last, outcome.last_id = position, log_id
            decoded = self._decode_one(log_id, fields, outcome)
            if decoded is not None:
                fresh.append(decoded)
        return fresh

    def _decode_one(self, log_id: str, fields: Any, outcome: BatchOutcome) -> Decoded | None:
        if not fields:
            logger.warning("skipped entry %s: deleted from the log", log_id)
            outcome.skip("deleted")
            return None
        try:
            event = self.codec.decode(_field(fields, _EVENT) or b"")
        except UnknownEvent as exc:
            logger.info("skipped entry %s: %s", log_id, exc)
            outcome.skip("unknown")
            return None
        except EventError as exc:
            logger.warning("skipped malformed entry %s: %s", log_id, exc)
            outcome.skip("malformed")
            return None
        run_id = _field(fields, _RUN_ID)
        source_id = _field(fields, _SOURCE_ID)
        return Decoded(
            log_id,
            event.run_id if run_id is None else _text(run_id),
            log_id if source_id is None else _text(source_id),
            event,
        )

    async def _states(self, run_ids: Iterable[str]) -> dict[str, RunState]:
        states: dict[str, RunState] = {}
        missing: list[str] = []
        for run_id in run_ids:
            cached = self._cache.get(run_id)
            if cached is None:
                missing.append(run_id)
            else:
                states[run_id] = cached
        for start in range(0, len(missing), _LOAD_CHUNK):
            chunk = missing[start : start + _LOAD_CHUNK]
            sql = f"SELECT state FROM runs WHERE run_id IN ({', '.join('?' for _ in chunk)})"
            async with self.db.execute(sql, chunk) as cursor:
                for (state,) in await cursor.fetchall():
                    decoded = self._decoder.decode(state)
                    states[decoded.run_id] = decoded
        return states

    async def _commit(self, dirty: dict[str, RunState], outcome: BatchOutcome) -> None:
        rows = [row_of(state, self._encoder.encode(state)) for state in dirty.values()]
        skipped = sum(outcome.skipped.values())
        try:
            await self.db.execute("BEGIN IMMEDIATE")
            await self.db.executemany(UPSERT_SQL, rows)
            await self.db.execute(
                "UPDATE checkpoint SET last_id = ?, applied = applied + ?, skipped = skipped + ? "
                "WHERE id = 1",
                (outcome.last_id, outcome.applied, skipped),
            )
            await self.db.execute("COMMIT")
        except BaseException:
            self._cache.clear()
            if self.db.in_transaction:
                await self.db.rollback()
            raise

    def _remember(self, dirty: dict[str, RunState]) -> None:
        if len(self._cache) + len(dirty) > self._cache_size:
            self._cache.clear()
        for run_id, state in dirty.items():
            if state.terminal:
                self._cache.pop(run_id, None)  # a finished run changes no more: keep memory for live ones
            else:
                self._cache[run_id] = state


def _field(fields: Any, name: tuple[bytes, str]) -> Any:
    value = fields.get(name[0])
    return fields.get(name[1]) if value is None else value


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
