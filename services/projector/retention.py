"""Retention, one owner: archive old runs, drop ended runs' streams, trim the log and the queues.

Every step is idempotent and bounded by what must be kept: an active run is never touched, the
log is trimmed only behind what every projector replica still needs (its checkpoint and latest
snapshot, published in ``tt:projectors``) and every other group's pending and undelivered
entries, a queue only of entries every group has acknowledged.

Every replica runs retention. Archiving is per database, so each does its own; the Redis steps
(unlinking ended runs' streams, trimming the log and queues) are shared but idempotent and each
replica's bound respects every other's needs, so running them from several replicas at once is
harmless. A replica silent for longer than the horizon no longer holds the log back: it is gone,
or so far behind that it must be reseeded from another replica's snapshot anyway.

Every age is on Redis's clock (``shared.clock``): a run's is the time of the log
entry of its last event (``logged_ms``), never the event's ``at``, which the appending process
stamped with its own, possibly skewed, clock.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiosqlite
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from services.projector import snapshots
from services.projector.db import transaction
from services.projector.metrics import metrics
from services.projector.rows import micros
from shared import streamids
from shared.clock import Now, millis, now_of
from shared.keys import DEFAULT_PROJECTOR, Keys, projector_of_group

logger = logging.getLogger(__name__)

_ARCHIVED = "run_id, user_id, symbol, status, requested_us, updated_us, last_event_id, logged_ms, state"
_ENDED = "status NOT IN ('pending', 'running') AND logged_ms < ?"
_DAY_MS = 86_400_000
_UNLINK_CHUNK = 500


class Policy:
    """The configurable ages and choices of retention."""

    def __init__(
        self,
        *,
        history: timedelta,
        history_action: str,
        run_stream_ttl: timedelta,
        log_retention: timedelta,
        queue_retention: timedelta,
        snapshot_dir: Path | None,
        horizon: timedelta = timedelta(days=1),
    ) -> None:
        self.history = history
        self.history_action = history_action
        self.run_stream_ttl = run_stream_ttl
        self.log_retention = log_retention
        self.queue_retention = queue_retention
        self.snapshot_dir = snapshot_dir
        """Where snapshots are kept; None when snapshots are off (the log is then trimmed freely)."""
        self.horizon = horizon
        """How long a replica's published needs hold the log back after it last published."""


class Retention:
    """One pass of every retention rule; ``now`` is Redis's clock unless a test injects one."""

    def __init__(
        self,
        db: aiosqlite.Connection,
        redis: Redis,
        keys: Keys,
        policy: Policy,
        *,
        checkpoint: Callable[[], str],
        lock: asyncio.Lock,
        now: Now | None = None,
        name: str = DEFAULT_PROJECTOR,
    ) -> None:
        self.db = db
        self.name = name
        self.redis = redis
        self.keys = keys
        self.policy = policy
        self.checkpoint = checkpoint
        self.lock = lock
        self.now = now
        self._swept_until_ms = 0

    async def run_once(self) -> dict[str, int]:
        """Apply every rule once; returns (and records in metrics and logs) what was done."""
        now = await now_of(self.redis, self.now)
        report = {
            self.policy.history_action + "d": await self.age_out_runs(now),
            "run_streams_expired": await self.expire_run_streams(now),
            "log_trimmed": await self.trim_log(now),
            "queue_trimmed": await self.trim_queues(now),
        }
        for action, n in report.items():
            if n:
                metrics().retention.labels(action=action).inc(n)
        logger.info("retention pass", extra={"retention": report})
        return report

    async def age_out_runs(self, now: datetime) -> int:
        """Move (or delete) ended runs whose last event is older than the history horizon."""
        cutoff = millis(now - self.policy.history)
        async with self.lock, transaction(self.db):
            if self.policy.history_action == "archive":
                await self.db.execute(
                    f"INSERT OR REPLACE INTO runs_archive ({_ARCHIVED}, archived_us) "
                    f"SELECT {_ARCHIVED}, ? FROM runs WHERE {_ENDED}",
                    (micros(now), cutoff),
                )
            cursor = await self.db.execute(f"DELETE FROM runs WHERE {_ENDED}", (cutoff,))
        return max(cursor.rowcount, 0)

    async def expire_run_streams(self, now: datetime) -> int:
        """Remove streams of runs that ended longer ago than the TTL (a backstop to EXPIRE)."""
        cutoff = millis(now - self.policy.run_stream_ttl)
        sql = f"SELECT run_id FROM runs WHERE {_ENDED} AND logged_ms >= ?"
        async with self.db.execute(sql, (cutoff, self._swept_until_ms)) as cursor:
            run_ids = [str(row[0]) for row in await cursor.fetchall()]
        removed = 0
        for start in range(0, len(run_ids), _UNLINK_CHUNK):
            pipe = self.redis.pipeline(transaction=False)
            for run_id in run_ids[start : start + _UNLINK_CHUNK]:
                pipe.unlink(self.keys.run(run_id), self.keys.meta(run_id))
            removed += sum(1 for n in await pipe.execute() if n)
        self._swept_until_ms = max(self._swept_until_ms, cutoff - _DAY_MS)
        return removed

    def needs(self) -> str:
        """The first log ID this replica still needs: after its checkpoint and latest snapshot."""
        bound = streamids.successor(self.checkpoint())
        if self.policy.snapshot_dir is not None:
            latest = snapshots.latest(self.policy.snapshot_dir)
            if latest is None:
                return streamids.ZERO  # nothing to rebuild from yet: keep the whole log
            bound = streamids.earliest(bound, streamids.successor(latest.checkpoint))
        return bound

    async def publish(self, now: datetime | None = None) -> str:
        """Tell the other replicas (``tt:projectors``) what this one needs, stamped with now."""
        at = now or await now_of(self.redis, self.now)
        needs = self.needs()
        await self.redis.hset(self.keys.projectors, self.name, f"{needs} {millis(at)}")
        return needs

    async def trim_log(self, now: datetime) -> int:
        """Trim the global log behind every replica's needs, other groups, and the log age."""
        bound = streamids.earliest(await self.publish(now), _age_bound(now, self.policy.log_retention))
        others = await self._log_bounds(now)
        if others is None:
            return 0
        return await self._trim(self.keys.events, streamids.earliest(bound, *others))

    async def trim_queues(self, now: datetime) -> int:
        """Trim each work queue of entries every group has acknowledged and that are old enough."""
        trimmed = 0
        for queue in self.keys.queues:
            group_bound = await self._groups_bound(queue)
            if group_bound is not None:
                bound = streamids.earliest(group_bound, _age_bound(now, self.policy.queue_retention))
                trimmed += await self._trim(queue, bound)
        return trimmed

    async def _log_bounds(self, now: datetime) -> list[str] | None:
        """The first log IDs the replicas (by what they published) and other groups still need.

        A projector group whose replica published is bounded by what it published (which also
        covers its snapshot), or not at all once that is older than the horizon; a group that
        never published (another service's, a projector of an earlier version) by its entries,
        unless it is a projector group none of whose consumers read within the horizon (the
        group ``projector`` of a deployment that renamed its replicas). None: no group at all,
        keep the whole log.
        """
        published = await self.redis.hgetall(self.keys.projectors)
        horizon_ms = millis(now - self.policy.horizon)
        bounds, reported = [], set()
        for raw_name, raw in published.items():
            name, (needs, at_ms) = _text(raw_name), _text(raw).split(" ")
            reported.add(name)
            if int(at_ms) >= horizon_ms:
                bounds.append(needs)
            else:
                logger.warning("projector %s silent since %s ms: not holding the log back", name, at_ms)
        groups = await self._groups(self.keys.events)
        if not groups:
            return None
        unreported = [g for g in groups if projector_of_group(_text(g["name"])) not in reported]
        holding = [g for g in unreported if not await self._abandoned(_text(g["name"]))]
        bound = await self._entries_bound(self.keys.events, holding)
        return bounds if bound is None else [*bounds, bound]

    async def _abandoned(self, group: str) -> bool:
        """A projector group whose consumers all last read longer than the horizon ago."""
        if projector_of_group(group) is None:
            return False
        consumers: list[dict[str, Any]] = await self.redis.xinfo_consumers(self.keys.events, group)
        horizon_ms = self.policy.horizon.total_seconds() * 1000
        return bool(consumers) and all(int(c["idle"]) > horizon_ms for c in consumers)

    async def _groups(self, stream: str) -> list[dict[str, Any]]:
        try:
            return list(await self.redis.xinfo_groups(stream))
        except ResponseError:
            return []

    async def _groups_bound(self, stream: str) -> str | None:
        """The first ID some group still needs (pending or undelivered); None: no group, keep all."""
        return await self._entries_bound(stream, await self._groups(stream))

    async def _entries_bound(self, stream: str, groups: list[dict[str, Any]]) -> str | None:
        bounds = []
        for group in groups:
            bounds.append(streamids.successor(_text(group["last-delivered-id"])))
            if int(group["pending"]):
                summary = await self.redis.xpending(stream, group["name"])
                bounds.append(_text(summary["min"]))
        return streamids.earliest(*bounds) if bounds else None

    async def _trim(self, stream: str, minid: str) -> int:
        return int(await self.redis.xtrim(stream, minid=minid, approximate=False))


def _age_bound(now: datetime, age: timedelta) -> str:
    return f"{max(millis(now - age), 0)}-0"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
