"""The consumer-group reader of the global log: pending entries first, then new ones."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from opentelemetry import trace
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from services.projector.metrics import metrics
from services.projector.projection import BatchOutcome, Projection, RawEntry
from shared import streamids
from shared.keys import PROJECTOR_GROUP, Keys
from shared.telemetry import span_context_of

logger = logging.getLogger(__name__)

NEW = ">"
PENDING_START = "0"
_RETRY_S = (0.1, 0.5, 1.0, 2.0, 5.0)
_READ_AHEAD = 2
"""Batches read but not yet applied: enough to keep the applier busy, bounded in memory."""

Batch = list[RawEntry] | Exception | None
"""What the reader hands the applier: entries, its failure, or None when stopped."""


class Consumer:
    """Reads batches of the global log through this projector's group, applies them exactly once."""

    def __init__(
        self,
        projection: Projection,
        redis: Redis,
        reader: Redis,
        keys: Keys,
        *,
        consumer: str,
        batch_size: int,
        batch_wait_ms: int,
        lock: asyncio.Lock,
        batch_max: int | None = None,
        tracer: trace.Tracer | None = None,
        group: str = PROJECTOR_GROUP,
    ) -> None:
        self.projection = projection
        self.redis = redis
        self.reader = reader
        self.stream = keys.events
        self.consumer = consumer
        self.group = group
        self.batch_size = batch_size
        self.batch_wait_ms = batch_wait_ms
        self.batch_max = max(batch_max or batch_size, batch_size)
        self.lock = lock
        self._ack: asyncio.Task[Any] | None = None
        self._tracer = tracer or trace.get_tracer(__name__)
        # The reader is this consumer's own connection: its XREADGROUP replies stay raw (flat
        # field lists), the projection reads them without building a dict per entry.
        reader.set_response_callback("XREADGROUP", _raw_reply)

    async def prepare(self) -> None:
        """Create the group at the checkpoint; rewind it there if the database is behind it.

        A new group starts where the database is (restored from a snapshot, or empty: the log's
        start), not at the log's start: what the database holds needs no re-reading.
        """
        start = self.projection.checkpoint
        try:
            await self.redis.xgroup_create(self.stream, self.group, id=start, mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        delivered = await self._last_delivered()
        checkpoint = self.projection.checkpoint
        if streamids.after(delivered, checkpoint):
            logger.warning("read models at %s, group at %s: re-reading the log", checkpoint, delivered)
            await self.redis.xgroup_setid(self.stream, self.group, checkpoint)
        await self._claim_orphans()

    async def run(self, stop: asyncio.Event) -> None:
        """Apply batches until ``stop`` is set; a failure re-reads this consumer's pending entries."""
        failures = 0
        while not stop.is_set():
            try:
                await self.pipeline(stop)
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("projector batch failed; re-reading pending entries")
                failures += 1
                delay = _RETRY_S[min(failures, len(_RETRY_S)) - 1]
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)

    async def pipeline(self, stop: asyncio.Event) -> None:
        """Pending entries first, then new ones; reading batch N+1 overlaps applying batch N.

        The reader only moves the read position: an entry read ahead is pending for this consumer
        until its batch commits and is acknowledged, so a failure (or a kill) anywhere loses
        nothing: the next pass starts again at this consumer's pending entries.
        """
        batches: asyncio.Queue[Batch] = asyncio.Queue(maxsize=_READ_AHEAD)
        reader = asyncio.create_task(self._read(batches, stop), name="projector-reader")
        try:
            while (entries := await batches.get()) is not None:
                if isinstance(entries, Exception):
                    raise entries
                await self.handle(entries, wait_ack=False)
            await self._acked()
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            await self._drop_ack()

    async def _read(self, batches: asyncio.Queue[Batch], stop: asyncio.Event) -> None:
        position, count = PENDING_START, self.batch_size
        try:
            while not stop.is_set():
                entries = await self._read_batch(position, count)
                if entries:
                    await batches.put(entries)
                position, count = _next_position(position, entries), self._next_count(count, entries)
        except Exception as exc:
            await batches.put(exc)
            return
        await batches.put(None)

    async def _read_batch(self, position: str, count: int) -> list[RawEntry]:
        block = self.batch_wait_ms if position == NEW else None
        reply: Any = await self.reader.xreadgroup(
            self.group, self.consumer, {self.stream: position}, count=count, block=block
        )
        return [e for e in _entries_of(reply) if e[0] is not None]

    def _next_count(self, count: int, entries: list[RawEntry]) -> int:
        """Grow the batch while the log has a backlog (a full read), back to the base otherwise."""
        if len(entries) >= count:
            return min(count * 2, self.batch_max)
        return self.batch_size

    async def handle(self, entries: list[RawEntry], *, wait_ack: bool = True) -> BatchOutcome:
        """Apply one batch (rows and checkpoint in one commit), then acknowledge it.

        With ``wait_ack=False`` the XACK runs while the next batch is applied; it is awaited
        before the next one is sent. Acknowledging late is safe: until then the entries stay
        pending, and an entry re-read after its commit is at or below the checkpoint: skipped.
        """
        started = time.time_ns()
        async with self.lock:
            outcome = await self.projection.apply(entries)
        await self._acked()
        ids = [entry_id for entry_id, _ in entries]
        self._ack = asyncio.ensure_future(self.redis.xack(self.stream, self.group, *ids))
        if wait_ack:
            await self._acked()
        _observe(outcome, len(entries))
        self._trace(entries, outcome, started)
        return outcome

    def _trace(self, entries: list[RawEntry], outcome: BatchOutcome, started_ns: int) -> None:
        """A ``projector.apply_batch`` span linked to the trace of every run in the batch.

        A batch mixes many runs, so it continues none of them: it links to them (the messaging
        conventions for batch consumers).
        """
        contexts = (span_context_of(tp) for tp in outcome.traces.values())
        span = self._tracer.start_span(
            "projector.apply_batch",
            start_time=started_ns,
            kind=trace.SpanKind.CONSUMER,
            links=[trace.Link(ctx) for ctx in contexts if ctx is not None],
            attributes={
                "messaging.system": "redis",
                "messaging.operation": "process",
                "messaging.destination.name": self.stream,
                "messaging.batch.message_count": len(entries),
                "tickertape.batch.first_id": _text(entries[0][0]) if entries else "",
                "tickertape.batch.last_id": _text(entries[-1][0]) if entries else "",
                "tickertape.batch.applied": outcome.applied,
                "tickertape.batch.skipped": sum(outcome.skipped.values()),
                "tickertape.batch.duplicates": outcome.duplicates,
                "tickertape.batch.traces": len(outcome.traces),
            },
        )
        span.end()

    async def _acked(self) -> None:
        """Wait for the last batch's XACK (raising its failure)."""
        ack, self._ack = self._ack, None
        if ack is not None:
            await ack

    async def _drop_ack(self) -> None:
        """After a failure: let an XACK in flight end; its entries are re-read if it did not."""
        ack, self._ack = self._ack, None
        if ack is not None:
            with contextlib.suppress(Exception):
                await ack

    async def _last_delivered(self) -> str:
        for group in await self.redis.xinfo_groups(self.stream):
            if _text(group["name"]) == self.group:
                return _text(group["last-delivered-id"])
        return streamids.ZERO

    async def _claim_orphans(self) -> None:
        """Take over entries pending for consumers of an earlier name (host renamed, scaled to one)."""
        start = streamids.ZERO
        while True:
            reply: Any = await self.redis.xautoclaim(
                self.stream, self.group, self.consumer, 0, start_id=start, count=1000
            )  # redis-py drops the cursor of a JUSTID reply, so take the entries and ignore them
            start = _text(reply[0])
            if start == streamids.ZERO:
                return


def _observe(outcome: BatchOutcome, size: int) -> None:
    m = metrics()
    m.batch_size.observe(size)
    m.applied.inc(outcome.applied)
    for reason, n in outcome.skipped.items():
        m.skipped.labels(reason=reason).inc(n)
    if outcome.duplicates:
        m.skipped.labels(reason="duplicate").inc(outcome.duplicates)


def _raw_reply(response: Any, **options: Any) -> Any:
    """XREADGROUP's reply as Redis sent it (not parsed into a dict per entry)."""
    return response


def _entries_of(reply: Any) -> list[RawEntry]:
    """The one stream's ``[id, [k, v, …]]`` entries: RESP2 ``[[stream, entries]]``, RESP3 a map."""
    if not reply:
        return []
    if isinstance(reply, dict):
        return list(next(iter(reply.values())))
    return list(reply[0][1])


def _next_position(position: str, entries: list[RawEntry]) -> str:
    """After the pending entries are exhausted, new ones (``>``)."""
    if not entries or position == NEW:
        return NEW
    return _text(entries[-1][0])


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
