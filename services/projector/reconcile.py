"""Reconciliation: runs the read model shows active but Redis lost in a failover.

With AOF ``everysec`` (or an asynchronous replica promoted) Redis may come back without the last
second of writes, while the projector had already applied them: the read model then shows a run
``pending``/``running`` whose meta hash, run stream and queue entry are gone, and no runner will
ever finish it. A pass finds active runs whose last event (and last reconciliation) is older
than the grace period and asks Redis for their meta hash. Both ages are on Redis's clock (the
log entry's time, ``logged_ms``, against ``TIME``): an event's ``at`` comes from the clock of
whichever process appended it, and a runner a month behind (or an hour ahead) must neither make
a live run look lost nor hide a lost one. For each one Redis does not know:

- first time: the run is **re-queued** — its request, rebuilt from the read model (same run id,
  user, symbol, model, analysts, options, priority and request time), is submitted again through
  the ordinary submit script, which recreates meta hash, run stream, global-log entry and queue
  entry in one step. The projector then applies a second ``RunRequested``: the run starts over
  as ``pending`` (``projection.resubmitted``);
- if it is lost again: the run is **failed** with code ``lost_in_failover`` (``EventStore.end_lost``
  writes the request and the ``RunFailed`` to a new run stream and the log, and an ``ended`` meta
  hash), so the log, the read model and every client agree that it ended.

Each action is recorded in the ``reconciled`` table *before* it is sent (at most one re-queue per
run, even if the process dies in between), counted in
``tickertape_retention_actions_total{action="requeue"|"lost"}`` and logged.

A pass only runs while the projector is no further behind the log than the grace period: a run
whose events are still unapplied must not look lost. A run Redis knows (meta hash present, in any
phase) is left alone: its runner, a reclaim, or the log will move it on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import aiosqlite
import msgspec
from opentelemetry import trace
from redis.asyncio import Redis

from services.projector.db import transaction
from services.projector.metrics import metrics
from services.projector.rows import micros
from shared import streamids
from shared.clock import Now, millis, now_of
from shared.events import RunFailed, RunRequested
from shared.keys import Keys
from shared.run_state import RunState
from shared.store import EventStore, Refused
from shared.telemetry import current_traceparent

logger = logging.getLogger(__name__)

LOST_CODE = "lost_in_failover"
MAX_PER_PASS = 500
_STALE_SQL = """
SELECT r.state, COALESCE(c.requeues, 0) FROM runs r LEFT JOIN reconciled c ON c.run_id = r.run_id
WHERE r.status IN ('pending', 'running') AND r.logged_ms < ? AND COALESCE(c.acted_us, 0) < ?
ORDER BY r.logged_ms LIMIT ?
"""
_MARK_SQL = """
INSERT INTO reconciled (run_id, requeues, lost_us, acted_us) VALUES (?, ?, ?, ?)
ON CONFLICT (run_id) DO UPDATE SET requeues = requeues + excluded.requeues,
    lost_us = COALESCE(excluded.lost_us, lost_us), acted_us = excluded.acted_us
"""


@dataclass(frozen=True, slots=True)
class Candidate:
    """An active run of the read model, older than the grace period."""

    state: RunState
    requeues: int


class Reconciler:
    """One pass over stale active runs; ``now`` is Redis's clock unless a test injects one."""

    def __init__(
        self,
        db: aiosqlite.Connection,
        redis: Redis,
        keys: Keys,
        *,
        grace: timedelta,
        checkpoint: Callable[[], str],
        lock: asyncio.Lock,
        now: Now | None = None,
        store: EventStore | None = None,
    ) -> None:
        self.db = db
        self.redis = redis
        self.keys = keys
        self.grace = grace
        self.checkpoint = checkpoint
        self.lock = lock
        self.now = now
        self.store = store or EventStore(redis, keys)
        self._decoder = msgspec.json.Decoder(RunState)
        self._tracer = trace.get_tracer(__name__)

    async def run_once(self) -> dict[str, int]:
        """Re-queue or fail every stale active run Redis does not know; returns the counts."""
        report = {"requeue": 0, "lost": 0}
        if not await self.caught_up():
            logger.info("reconciliation skipped: the projector is more than the grace period behind")
            return report
        now = await now_of(self.redis, self.now)
        for candidate in await self._unknown(await self._stale(now)):
            action = await self._reconcile(candidate, now)
            if action is not None:
                report[action] += 1
                metrics().retention.labels(action=action).inc()
        if any(report.values()):
            logger.warning("reconciliation pass", extra={"reconcile": report})
        return report

    async def caught_up(self) -> bool:
        """Whether the checkpoint is at most the grace period behind the log's head."""
        head: Any = await self.redis.xrevrange(self.keys.events, count=1)
        if not head:
            return True
        head_id, checkpoint = _text(head[0][0]), self.checkpoint()
        behind_ms = streamids.millis(head_id) - streamids.millis(checkpoint)
        return not streamids.after(head_id, checkpoint) or behind_ms <= self.grace.total_seconds() * 1000

    async def _stale(self, now: datetime) -> list[Candidate]:
        cutoff = now - self.grace
        params = (millis(cutoff), micros(cutoff), MAX_PER_PASS)
        async with self.lock, self.db.execute(_STALE_SQL, params) as cursor:
            rows = await cursor.fetchall()
        return [Candidate(self._decoder.decode(state), int(requeues)) for state, requeues in rows]

    async def _unknown(self, candidates: Sequence[Candidate]) -> list[Candidate]:
        """The candidates whose meta hash Redis does not have."""
        if not candidates:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for candidate in candidates:
                pipe.exists(self.keys.meta(candidate.state.run_id))
            known = await pipe.execute()
        return [c for c, exists in zip(candidates, known, strict=True) if not exists]

    async def _reconcile(self, candidate: Candidate, now: datetime) -> str | None:
        state = candidate.state
        with self._tracer.start_as_current_span(
            "projector.reconcile", attributes={"tickertape.run_id": state.run_id}
        ) as span:
            request = request_of(state)
            if candidate.requeues == 0 and request is not None:
                await self._requeue(request, now)
                span.set_attribute("tickertape.reconcile.action", "requeue")
                return "requeue"
            done = await self._fail(state, request, candidate.requeues, now)
            span.set_attribute("tickertape.reconcile.action", "lost" if done else "none")
            return "lost" if done else None

    async def _requeue(self, request: RunRequested, now: datetime) -> None:
        await self._mark(request.run_id, now, requeued=True)
        try:
            await self.store.submit(request)
        except BaseException:
            await self._unmark(request.run_id)
            raise
        logger.warning(
            "run %s was lost from Redis (failover): re-queued", request.run_id,
            extra={"run_id": request.run_id, "reconcile": "requeue"},
        )  # fmt: skip

    async def _fail(
        self, state: RunState, request: RunRequested | None, requeues: int, now: datetime
    ) -> bool:
        why = "lost again after being re-queued" if requeues else "lost, and its request is not known"
        failure = RunFailed(
            run_id=state.run_id,
            code=LOST_CODE,
            message=f"the run was {why} in a Redis failover; submit it again",
            attempt=max(state.attempt, 1),
            traceparent=current_traceparent(),
        )
        try:
            await self.store.end_lost(failure, request=request, user_id=state.user_id)
        except Refused:
            return False  # Redis knows the run now: nothing to do
        await self._mark(state.run_id, now, lost=True)
        logger.warning(
            "run %s was %s (failover): failed with %s", state.run_id, why, LOST_CODE,
            extra={"run_id": state.run_id, "reconcile": "lost"},
        )  # fmt: skip
        return True

    async def _mark(self, run_id: str, now: datetime, *, requeued: bool = False, lost: bool = False) -> None:
        stamp = micros(now)
        await self._write(_MARK_SQL, (run_id, int(requeued), stamp if lost else None, stamp))

    async def _unmark(self, run_id: str) -> None:
        sql = "UPDATE reconciled SET requeues = requeues - 1 WHERE run_id = ? AND requeues > 0"
        await self._write(sql, (run_id,))

    async def _write(self, sql: str, params: tuple[Any, ...]) -> None:
        async with self.lock, transaction(self.db):
            await self.db.execute(sql, params)


def request_of(state: RunState) -> RunRequested | None:
    """The run's original request, rebuilt from its state (None when the state lacks it)."""
    if state.requested_at is None or not (state.user_id and state.symbol and state.model_id):
        return None
    return RunRequested(
        run_id=state.run_id,
        at=state.requested_at,
        user_id=state.user_id,
        symbol=state.symbol,
        model_id=state.model_id,
        analysts=state.analysts,
        options=state.options,
        priority="high" if state.priority == "high" else "normal",
        traceparent=current_traceparent(),
    )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
