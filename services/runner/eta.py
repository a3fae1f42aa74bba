"""What runs like this one took before: the basis of the ETA a run shows from its start."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis

from shared.events import RunRequested
from shared.keys import Keys

_KEEP = 20
_TTL_S = 30 * 24 * 3600
MAX_AGE_S = 5.0
"""How long a config's durations read from Redis serve this process before it reads them again
(its own runs' durations are added at once; other runners' show up within this)."""


def config_of(request: RunRequested) -> str:
    """Runs with the same config take about as long: pipeline, model, analysts, debate rounds."""
    analysts = ",".join(sorted(request.analysts))
    return f"{request.options.pipeline}|{request.model_id}|{analysts}|{request.options.debate_rounds}"


class EtaBook:
    """The last few durations per config (a capped list); the median is the expectation.

    Reads are cached in the process for ``max_age_s``; records go to Redis (in the caller's
    pipeline when it has one) and into the cache.
    """

    def __init__(self, redis: Redis, keys: Keys, *, max_age_s: float = MAX_AGE_S) -> None:
        self.redis = redis
        self.keys = keys
        self.max_age_s = max_age_s
        self._cache: dict[str, tuple[float, list[float]]] = {}

    async def expected(self, request: RunRequested) -> float | None:
        return (await self.expected_many([request]))[0]

    async def expected_many(self, requests: Sequence[RunRequested]) -> list[float | None]:
        """The expected duration of each request; one round trip for the configs not cached."""
        configs = [config_of(r) for r in requests]
        now = time.monotonic()
        stale = sorted({c for c in configs if now - self._cache.get(c, (-1e18, []))[0] > self.max_age_s})
        if stale:
            async with self.redis.pipeline(transaction=False) as pipe:
                for config in stale:
                    pipe.lrange(self.keys.eta(config), 0, _KEEP - 1)
                raws = await pipe.execute()
            for config, raw in zip(stale, raws, strict=True):
                self._cache[config] = (now, [float(x) for x in raw])
        return [_median(self._cache[c][1]) for c in configs]

    async def record(self, request: RunRequested, duration_s: float) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            self.queue_records(pipe, [(request, duration_s)])
            await pipe.execute()

    def queue_records(self, pipe: Any, records: Sequence[tuple[RunRequested, float]]) -> None:
        """Add the durations to a pipeline the caller executes (one LPUSH per config)."""
        by_config: dict[str, list[str]] = {}
        for request, duration_s in records:
            by_config.setdefault(config_of(request), []).append(f"{duration_s:.3f}")
        for config, values in by_config.items():
            key = self.keys.eta(config)
            pipe.lpush(key, *values)
            pipe.ltrim(key, 0, _KEEP - 1)
            pipe.expire(key, _TTL_S)
            cached = self._cache.get(config)
            if cached is not None:  # LPUSH puts the last value first
                fresh = [float(v) for v in reversed(values)] + cached[1]
                self._cache[config] = (cached[0], fresh[:_KEEP])


def _median(durations: list[float]) -> float | None:
    return round(statistics.median(durations), 3) if durations else None
