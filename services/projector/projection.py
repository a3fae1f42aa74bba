"""Folding global-log entries into the ``runs`` read model, batch and checkpoint in one transaction."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiosqlite
import msgspec

from services.projector.db import transaction
from services.projector.rows import UPSERT_SQL, row_of
from shared import outcomes, streamids
from shared.events import (
    AnyEvent,
    EventCodec,
    EventError,
    OutcomeMeasured,
    RunCompleted,
    RunRequested,
    UnknownEvent,
)
from shared.keys import EVENT_FIELD, RUN_ID_FIELD, SOURCE_ID_FIELD
from shared.reducer import apply_mut
from shared.results import Outcome
from shared.run_state import ACTIVE, TERMINAL, RunState, initial

logger = logging.getLogger(__name__)

RawEntry = tuple[Any, Any]
"""(entry ID, fields) as redis-py returns them (bytes or str)."""

_LOAD_CHUNK = 500
CACHE_SIZE = 20_000
"""Active runs' states the writer keeps between batches (a full cache is dropped, not evicted)."""
_CHECKPOINT_SQL = "SELECT last_id FROM checkpoint WHERE id = 1"
_ADVANCE_SQL = "UPDATE checkpoint SET last_id = ?, applied = applied + ?, skipped = skipped + ? WHERE id = 1"
MAX_TRACES = 64
"""Traces a batch span links to (a catch-up batch holds hundreds of runs; links are bounded)."""
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
    traces: dict[str, str] = field(default_factory=dict)
    """A traceparent for each trace (by trace ID) the applied events came from, at most MAX_TRACES."""

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


Observed = list[tuple[str, str, Outcome]]
"""(earlier run id, the measuring run's user, its outcome) as the runs completed in a batch
measured them, and as the outcome sweep's ``OutcomeMeasured`` events state them, in log order."""
ROW_TABLES = ("runs", "runs_archive")
"""Where a run's row may be: an outcome may arrive after the run's row was archived."""

Decoded = tuple[str, str, AnyEvent, Any]
"""(run ID, run-stream ID, event, global-log ID as read) of one entry to apply: a tuple, the
cheapest record in the hot loop."""


class Projection:
    """The writer of the read models; the only one, so it may cache active runs' states."""

    def __init__(self, db: aiosqlite.Connection, *, cache_size: int = CACHE_SIZE) -> None:
        self.db = db
        self.checkpoint = streamids.ZERO
        self.codec = EventCodec()
        self._encoder = msgspec.json.Encoder()
        self._decoder = msgspec.json.Decoder(RunState)
        self._cache: dict[str, RunState] = {}
        self._cache_size = cache_size

    async def load(self) -> str:
        """Read the checkpoint (the last global-log ID applied) from the database."""
        async with self.db.execute(_CHECKPOINT_SQL) as cursor:
            (row,) = await cursor.fetchall()  # the schema's migration inserts the one row
        self.checkpoint = str(row[0])
        return self.checkpoint

    async def apply(self, entries: Sequence[RawEntry]) -> BatchOutcome:
        """Apply the entries after the checkpoint; commit them and the new checkpoint together."""
        outcome = BatchOutcome(last_id=self.checkpoint)
        fresh = self._decode(entries, outcome)
        if outcome.last_id == self.checkpoint:
            return outcome
        try:
            dirty, observed = await self._fold(fresh)
            outcome.applied = len(fresh)
            updated = await self._observe(dirty, observed)
            await self._commit(dirty, _logged_ms(fresh), outcome, updated)
        except BaseException:
            self._cache.clear()  # states are folded in place: a cached one may hold uncommitted events
            raise
        self.checkpoint = outcome.last_id
        self._remember(dirty)
        return outcome

    async def _fold(self, fresh: list[Decoded]) -> tuple[dict[str, RunState], Observed]:
        """Each touched run's state after this batch, folded in place (the writer owns them), and
        the outcomes of earlier runs that the runs completed in it measured."""
        states = await self._states({d[0] for d in fresh if type(d[2]) is not OutcomeMeasured})
        observed: Observed = []
        for run_id, source_id, event, _ in fresh:
            if type(event) is OutcomeMeasured:  # not a change of the run: recorded on its row only
                observed.append(outcomes.swept(event))
                continue
            state = states.get(run_id)
            if state is None or (type(event) is RunRequested and resubmitted(state)):
                state = states[run_id] = initial(run_id)
            ends = event if type(event) is RunCompleted and state.status not in TERMINAL else None
            apply_mut(state, event, source_id)
            if ends is not None:
                observed += outcomes.observed(ends, state.user_id)
        return states, observed

    async def _observe(self, dirty: dict[str, RunState], observed: Observed) -> dict[str, RunState]:
        """Record each outcome on its run: in ``dirty`` when the batch touched the run, else in a
        copy of its stored state, returned to be written back to the row it came from."""
        stored = await self._stored([r for r, _, _ in observed if r not in dirty])
        updated: dict[str, RunState] = {}
        for run_id, by_user, measured in observed:
            state = dirty.get(run_id) or stored.get(run_id)
            if state is not None and outcomes.record(state, measured, by_user) and run_id not in dirty:
                updated[run_id] = state
        return updated

    async def _stored(self, run_ids: list[str]) -> dict[str, RunState]:
        """The stored states of finished runs the batch did not touch, current or archived."""
        found: dict[str, RunState] = {}
        for table in ROW_TABLES:
            found |= await self._load(table, [r for r in dict.fromkeys(run_ids) if r not in found])
        return found

    async def _load(self, table: str, run_ids: list[str]) -> dict[str, RunState]:
        """The states stored in ``table`` of those of ``run_ids`` it holds (chunked: SQLite
        bounds the parameters of one statement)."""
        found: dict[str, RunState] = {}
        for start in range(0, len(run_ids), _LOAD_CHUNK):
            chunk = run_ids[start : start + _LOAD_CHUNK]
            sql = f"SELECT state FROM {table} WHERE run_id IN ({', '.join('?' for _ in chunk)})"
            async with self.db.execute(sql, chunk) as cursor:
                for (state,) in await cursor.fetchall():
                    decoded = self._decoder.decode(state)
                    found[decoded.run_id] = decoded
        return found

    def _decode(self, entries: Sequence[RawEntry], outcome: BatchOutcome) -> list[Decoded]:
        """The events to apply, in log order; skipped entries are counted in ``outcome``."""
        fresh: list[Decoded] = []
        decode, traces = self.codec.decode, outcome.traces
        e_key, r_key, s_key = _EVENT[0], _RUN_ID[0], _SOURCE_ID[0]
        for raw_id, fields in self._after_checkpoint(entries, outcome):
            if (  # the append script's layout, read raw: no call, no tuple (else ``_fields``)
                type(fields) is list
                and len(fields) == 6
                and fields[0] == e_key
                and fields[2] == r_key
                and fields[4] == s_key
            ):
                data, run_id, source_id = fields[1], fields[3].decode(), fields[5].decode()
            else:
                data, run_id, source_id = _fields(fields)
            try:
                event = decode(data)
            except (EventError, TypeError) as exc:
                self._skip(raw_id, data, exc, outcome)
                continue
            if event.traceparent is not None and len(traces) < MAX_TRACES:
                traces.setdefault(event.traceparent[3:35], event.traceparent)  # 00-<trace id>-…
            fresh.append(
                (
                    event.run_id if run_id is None else run_id,
                    _text(raw_id) if source_id is None else source_id,
                    event,
                    raw_id,
                )
            )
        return fresh

    def _after_checkpoint(self, entries: Sequence[RawEntry], outcome: BatchOutcome) -> Sequence[RawEntry]:
        """The entries after the checkpoint; those at or below it count as duplicates.

        Redis returns a stream's entries in ID order, so only a prefix can be at or below the
        checkpoint: the IDs after it need no parsing.
        """
        last, start = streamids.parse(outcome.last_id), 0
        while start < len(entries) and streamids.parse(_text(entries[start][0])) <= last:
            start += 1
        outcome.duplicates = start  # a fresh outcome: one call per batch
        kept = entries[start:]
        if kept:
            outcome.last_id = _text(kept[-1][0])
        return kept

    @staticmethod
    def _skip(raw_id: Any, data: Any, exc: Exception, outcome: BatchOutcome) -> None:
        if data is None:
            logger.warning("skipped entry %s: deleted from the log", _text(raw_id))
            outcome.skip("deleted")
        elif isinstance(exc, UnknownEvent):
            logger.info("skipped entry %s: %s", _text(raw_id), exc)
            outcome.skip("unknown")
        else:
            logger.warning("skipped malformed entry %s: %s", _text(raw_id), exc)
            outcome.skip("malformed")

    async def _states(self, run_ids: Iterable[str]) -> dict[str, RunState]:
        states: dict[str, RunState] = {}
        missing: list[str] = []
        for run_id in run_ids:
            cached = self._cache.get(run_id)
            if cached is None:
                missing.append(run_id)
            else:
                states[run_id] = cached
        return states | await self._load("runs", missing)

    async def _commit(
        self,
        dirty: dict[str, RunState],
        logged: dict[str, int],
        outcome: BatchOutcome,
        updated: dict[str, RunState],
    ) -> None:
        encode = self._encoder.encode
        rows = [row_of(state, encode(state), logged[run_id]) for run_id, state in dirty.items()]
        states = [(encode(state).decode(), run_id) for run_id, state in updated.items()]
        skipped = sum(outcome.skipped.values())
        try:
            async with transaction(self.db):
                await self.db.executemany(UPSERT_SQL, rows)
                for table in ROW_TABLES if states else ():  # only the state: its columns stay
                    await self.db.executemany(f"UPDATE {table} SET state = ? WHERE run_id = ?", states)
                await self.db.execute(_ADVANCE_SQL, (outcome.last_id, outcome.applied, skipped))
        except BaseException:
            self._cache.clear()
            raise

    def _remember(self, dirty: dict[str, RunState]) -> None:
        if len(self._cache) + len(dirty) > self._cache_size:
            self._cache.clear()
        for run_id, state in dirty.items():
            if state.terminal:
                self._cache.pop(run_id, None)  # a finished run changes no more: keep memory for live ones
            else:
                self._cache[run_id] = state


def _logged_ms(fresh: list[Decoded]) -> dict[str, int]:
    """Each run's Redis time (ms of the log ID) of its last entry in the batch: what ages it."""
    last = {d[0]: d[3] for d in fresh if type(d[2]) is not OutcomeMeasured}  # outcomes age no row
    return {run_id: streamids.millis(_text(raw_id)) for run_id, raw_id in last.items()}


def resubmitted(state: RunState) -> bool:
    """Whether a ``RunRequested`` for a run in ``state`` re-submits it (reconciliation re-queued a
    run Redis lost): the run was already requested and is still active. It then starts over from
    the request, exactly as its new run stream does (status ``pending``, the plan reset)."""
    return state.requested_at is not None and state.status in ACTIVE


def _fields(fields: Any) -> tuple[Any, str | None, str | None]:
    """(event, run ID, run-stream ID) of an entry's fields: a dict (bytes or str keys) as redis-py
    parses it, or the flat ``[k, v, k, v…]`` list of a raw reply. The event is None for an entry
    deleted from the log, ``b""`` when the field is missing (malformed); IDs are None when absent."""
    if not fields:
        return None, None, None
    if isinstance(fields, list):  # any other layout than the append script's (``_decode`` reads that)
        fields = dict(zip(fields[::2], fields[1::2], strict=True))
    run_id, source_id = _field(fields, _RUN_ID), _field(fields, _SOURCE_ID)
    return (
        _field(fields, _EVENT) or b"",
        None if run_id is None else _text(run_id),
        None if source_id is None else _text(source_id),
    )


def _field(fields: Any, name: tuple[bytes, str]) -> Any:
    value = fields.get(name[0])
    return fields.get(name[1]) if value is None else value


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
