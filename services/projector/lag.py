"""How far the read models are behind the global log, in entries and in seconds."""

from __future__ import annotations

from typing import Any

import msgspec
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from shared import streamids
from shared.keys import PROJECTOR_GROUP

COUNT_CAP = 10_000
"""Where Redis has no group lag (before 7.0) the backlog is counted, up to this many entries."""


class Checkpoint(msgspec.Struct, frozen=True):
    last_id: str
    lag: int
    lag_seconds: float


async def measure(redis: Redis, stream: str, checkpoint: str, group: str = PROJECTOR_GROUP) -> Checkpoint:
    """Entries after the checkpoint and the time between the oldest of them and the log's head."""
    try:
        info = await redis.xinfo_stream(stream)
    except ResponseError:  # no log yet
        return Checkpoint(checkpoint, 0, 0.0)
    head = _text(info["last-generated-id"])
    if not streamids.after(head, checkpoint) or not info.get("length"):
        return Checkpoint(checkpoint, 0, 0.0)
    entries = await _entries_behind(redis, stream, checkpoint, group)
    oldest = checkpoint if checkpoint != streamids.ZERO else _text(info["first-entry"][0])
    seconds = max(streamids.millis(head) - streamids.millis(oldest), 0) / 1000
    return Checkpoint(checkpoint, entries, seconds if entries else 0.0)


async def _entries_behind(redis: Redis, stream: str, checkpoint: str, group: str) -> int:
    for info in await redis.xinfo_groups(stream):
        if _text(info["name"]) == group and info.get("lag") is not None:
            return int(info["lag"]) + int(info["pending"])
    ids: Any = await redis.xrange(stream, min=f"({checkpoint}", max="+", count=COUNT_CAP)
    return len(ids)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
