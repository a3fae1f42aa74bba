"""What runs like this one took before: the basis of the ETA a run shows from its start."""

from __future__ import annotations

import statistics

from redis.asyncio import Redis

from shared.events import RunRequested
from shared.keys import Keys

_KEEP = 20
_TTL_S = 30 * 24 * 3600


def config_of(request: RunRequested) -> str:
    """Runs with the same config take about as long: pipeline, model, analysts, debate rounds."""
    analysts = ",".join(sorted(request.analysts))
    return f"{request.options.pipeline}|{request.model_id}|{analysts}|{request.options.debate_rounds}"


class EtaBook:
    """The last few durations per config (a capped list); the median is the expectation."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys

    async def expected(self, request: RunRequested) -> float | None:
        raw = await self.redis.lrange(self.keys.eta(config_of(request)), 0, _KEEP - 1)
        durations = [float(x) for x in raw]
        return round(statistics.median(durations), 3) if durations else None

    async def record(self, request: RunRequested, duration_s: float) -> None:
        key = self.keys.eta(config_of(request))
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.lpush(key, f"{duration_s:.3f}")
            pipe.ltrim(key, 0, _KEEP - 1)
            pipe.expire(key, _TTL_S)
            await pipe.execute()
