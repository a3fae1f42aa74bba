"""The queue entries one runner holds, and the renewal round that keeps their leases."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from services.runner.execution import Execution
from services.runner.metrics import metrics
from services.runner.queue import Job, WorkQueue
from shared.store import Entry

logger = logging.getLogger(__name__)

Found = tuple[Job, list[Entry] | None]
"""A job with its run's events when the read brought them (None: not read yet)."""


class Leases:
    """Entries being executed (``held``) or waiting for a slot (``parked``), all kept alive."""

    def __init__(self, renew_s: float) -> None:
        self.renew_s = renew_s
        self.held: dict[str, Execution] = {}
        self.parked: list[Found] = []
        """Entries a blocking read brought while a takeover took their slots (see the worker's
        ``_park``): their leases are kept too, and one another runner took over is dropped."""

    def ids(self) -> set[str]:
        """Every entry this runner holds: a claim must never take one of them over."""
        return set(self.held) | {job.entry_id for job, _ in self.parked}

    def hold(self, batch: Sequence[Found]) -> list[tuple[Execution, list[Entry] | None]]:
        items = [(Execution(job), entries) for job, entries in batch]
        for ex, _ in items:
            self.held[ex.job.entry_id] = ex
        metrics().executing.set(len(self.held))
        return items

    def free(self, ex: Execution) -> None:
        if self.held.get(ex.job.entry_id) is ex:
            del self.held[ex.job.entry_id]
        metrics().executing.set(len(self.held))

    async def keep(self, queue: WorkQueue, renewed: Callable[[float], None]) -> None:
        """Renew every ``renew_s`` until cancelled; ``renewed`` gets each round's time from when
        it was due to its reply (event-loop lag included). Unlike the other loops this one goes
        on after a stop is requested: runs in their grace period still need their leases."""
        due = time.monotonic() + self.renew_s
        while True:
            await asyncio.sleep(max(due - time.monotonic(), 0.0))
            try:
                await self.renew_once(queue)
            except Exception:
                logger.exception("lease renewal failed; retrying")
            now = time.monotonic()
            renewed(now - due)
            due = now + self.renew_s

    async def renew_once(self, queue: WorkQueue) -> None:
        """One round: every held entry of every queue in one round trip; a lost one is stopped."""
        by_queue: dict[str, list[str]] = {}
        for job in [ex.job for ex in self.held.values()] + [job for job, _ in self.parked]:
            by_queue.setdefault(job.queue, []).append(job.entry_id)
        if not by_queue:
            return
        kept = await queue.renew(by_queue)
        for name, ids in by_queue.items():
            for entry_id in set(ids) - kept.get(name, set()):
                lost = self.held.get(entry_id)
                if lost is not None and lost.stop("lost"):
                    logger.warning("lease of run %s lost to another runner", lost.job.run_id)
        self.parked = [
            (job, raw)
            for job, raw in self.parked
            if job.queue not in by_queue or job.entry_id in kept.get(job.queue, set())
        ]
