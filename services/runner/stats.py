"""Queue depth, lag, pending and oldest-pending age, from XINFO GROUPS and the XPENDING summary."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis

from services.runner.metrics import RunnerMetrics
from services.runner.queue import id_time
from shared.keys import RUNNERS_GROUP

_LAG_SCAN_CAP = 10_000


async def refresh_queue_stats(redis: Redis, queues: Sequence[str], m: RunnerMetrics) -> None:
    for queue in queues:
        name = queue
        m.queue_depth.labels(queue=name).set(await redis.xlen(queue))
        group = await _group(redis, queue)
        if group is None:
            continue
        m.queue_lag.labels(queue=name).set(await _lag(redis, queue, group))
        summary = await redis.xpending(queue, RUNNERS_GROUP)
        m.queue_pending.labels(queue=name).set(int(summary["pending"]))
        oldest = summary["min"]
        age = max(time.time() - id_time(oldest), 0.0) if oldest else 0.0
        m.queue_oldest_pending.labels(queue=name).set(round(age, 3))


async def _group(redis: Redis, queue: str) -> dict[str, Any] | None:
    for group in await redis.xinfo_groups(queue):
        name = group["name"]
        if (name.decode() if isinstance(name, bytes) else name) == RUNNERS_GROUP:
            return dict(group)
    return None


async def _lag(redis: Redis, queue: str, group: dict[str, Any]) -> int:
    """7.x reports lag; 6.2 does not, so count entries after last-delivered-id (capped)."""
    lag = group.get("lag")
    if lag is not None:
        return int(lag)
    last = group["last-delivered-id"]
    last_id = last.decode() if isinstance(last, bytes) else str(last)
    entries: Any = await redis.xrange(queue, min=f"({last_id}", max="+", count=_LAG_SCAN_CAP)
    return len(entries)
