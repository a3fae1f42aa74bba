"""The consumer-group reader of the global log: pending entries first, then new ones."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from redis.asyncio import Redis

from services.projector import streamids
from services.projector.metrics import metrics
from services.projector.projection import BatchOutcome, Projection, RawEntry
from shared.keys import PROJECTOR_GROUP, Keys
from shared.redis_io import ensure_group

logger = logging.getLogger(__name__)

NEW = ">"
PENDING_START = "0"
_RETRY_S = (0.1, 0.5, 1.0, 2.0, 5.0)


class Consumer:
    """Reads batches of the global log through group ``projector`` and applies them exactly once."""

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
    ) -> None:
        self.projection = projection
        self.redis = redis
        self.reader = reader
        self.stream = keys.events
        self.consumer = consumer
        self.batch_size = batch_size
        self.batch_wait_ms = batch_wait_ms
        self.lock = lock

    async def prepare(self) -> None:
        """Create the group; rewind it to the checkpoint if the database is behind it."""
        await ensure_group(self.redis, self.stream, PROJECTOR_GROUP)
        delivered = await self._last_delivered()
        checkpoint = self.projection.checkpoint
        if streamids.after(delivered, checkpoint):
            logger.warning("read models at %s, group at %s: re-reading the log", checkpoint, delivered)
            await self.redis.xgroup_setid(self.stream, PROJECTOR_GROUP, checkpoint)
        await self._claim_orphans()

    async def run(self, stop: asyncio.Event) -> None:
        """Apply batches until ``stop`` is set; a failure re-reads this consumer's pending entries."""
        position, failures = PENDING_START, 0
        while not stop.is_set():
            try:
                position = await self.step(position)
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("projector batch failed; re-reading pending entries")
                position, failures = PENDING_START, failures + 1
                delay = _RETRY_S[min(failures, len(_RETRY_S)) - 1]
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)

    async def step(self, position: str) -> str:
        """Read and apply one batch at ``position``; returns where to read next."""
        block = self.batch_wait_ms if position == NEW else None
        reply: Any = await self.reader.xreadgroup(
            PROJECTOR_GROUP, self.consumer, {self.stream: position}, count=self.batch_size, block=block
        )
        entries: list[RawEntry] = [e for e in reply[0][1] if e[0] is not None] if reply else []
        if not entries:
            return NEW
        await self.handle(entries)
        return NEW if position == NEW else _text(entries[-1][0])

    async def handle(self, entries: list[RawEntry]) -> BatchOutcome:
        async with self.lock:
            outcome = await self.projection.apply(entries)
        await self.redis.xack(self.stream, PROJECTOR_GROUP, *[entry_id for entry_id, _ in entries])
        _observe(outcome, len(entries))
        return outcome

    async def _last_delivered(self) -> str:
        for group in await self.redis.xinfo_groups(self.stream):
            if _text(group["name"]) == PROJECTOR_GROUP:
                return _text(group["last-delivered-id"])
        return streamids.ZERO

    async def _claim_orphans(self) -> None:
        """Take over entries pending for consumers of an earlier name (host renamed, scaled to one)."""
        start = streamids.ZERO
        while True:
            reply: Any = await self.redis.xautoclaim(
                self.stream, PROJECTOR_GROUP, self.consumer, 0, start_id=start, count=1000
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


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
