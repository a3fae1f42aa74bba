"""What runs like this one took before: the basis of the ETA a run shows from its start."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from redis.asyncio import Redis

from shared.catalog import TRADING
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
    config = f"{request.options.pipeline}|{request.model_id}|{analysts}|{request.options.debate_rounds}"
    # a registered pipeline's runs are timed apart from the built-in one's (whose keys stay as they were)
    return config if request.pipeline == TRADING else f"{request.pipeline}:{config}"


class EtaBook:
    """The last few durations per config (a capped list); the median is the expectation.

    Reads are cached in the process for ``max_age_s``; a noted duration goes into the cache at
    once and to Redis at the next ``flush``.
    """

    def __init__(self, redis: Redis, keys: Keys, *, max_age_s: float = MAX_AGE_S) -> None:
        self.redis = redis
        self.keys = keys
        self.max_age_s = max_age_s
        self._cache: dict[str, tuple[float, list[float]]] = {}
        self._unwritten: list[tuple[str, str]] = []
        self._reading: dict[str, asyncio.Future[None]] = {}

    async def expected(self, request: RunRequested) -> float | None:
        return (await self.expected_many([request]))[0]

    async def expected_many(self, requests: Sequence[RunRequested]) -> list[float | None]:
        """The expected duration of each request; one round trip for the configs not cached."""
        configs = [config_of(r) for r in requests]
        now = time.monotonic()
        stale = {c for c in configs if now - self._cache.get(c, (-1e18, []))[0] > self.max_age_s}
        if stale:
            await self._refresh(sorted(stale), now)
        return [_median(self._cache.get(c, (now, []))[1]) for c in configs]

    async def _refresh(self, configs: list[str], now: float) -> None:
        """Read the configs' lists, once however many runs start at once: a read in flight
        is awaited, not repeated (a burst of runs would send one read each)."""
        new = [c for c in configs if c not in self._reading]
        if new:
            reading = asyncio.ensure_future(self._read(new, now))
            self._reading.update(dict.fromkeys(new, reading))
            reading.add_done_callback(lambda done: self._forget(new, done))
        # shielded: a run cancelled while it waits must not cancel the read the others wait for
        await asyncio.gather(*(asyncio.shield(r) for r in {self._reading[c] for c in configs}))

    def _forget(self, configs: list[str], done: asyncio.Future[None]) -> None:
        for config in configs:
            if self._reading.get(config) is done:
                del self._reading[config]

    async def _read(self, configs: list[str], now: float) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for config in configs:
                pipe.lrange(self.keys.eta(config), 0, _KEEP - 1)
            raws = await pipe.execute()
        for config, raw in zip(configs, raws, strict=True):
            self._cache[config] = (now, [float(x) for x in raw])

    async def record(self, request: RunRequested, duration_s: float) -> None:
        """Note a duration and write it (and any noted before) to Redis now."""
        self.note(request, duration_s)
        await self.flush()

    def note(self, request: RunRequested, duration_s: float) -> None:
        """A finished run's duration: in this process's cache at once, in Redis at the next
        ``flush`` (the worker flushes every second and when it stops)."""
        config, value = config_of(request), f"{duration_s:.3f}"
        self._unwritten.append((config, value))
        cached = self._cache.get(config)
        if cached is not None:
            self._cache[config] = (cached[0], [float(value), *cached[1]][:_KEEP])

    async def flush(self) -> None:
        """Write the noted durations: one LPUSH per config, capped, in one transaction."""
        if not self._unwritten:
            return
        records, self._unwritten = self._unwritten, []
        by_config: dict[str, list[str]] = {}
        for config, value in records:
            by_config.setdefault(config, []).append(value)
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                for config, values in by_config.items():
                    key = self.keys.eta(config)
                    pipe.lpush(key, *values)
                    pipe.ltrim(key, 0, _KEEP - 1)
                    pipe.expire(key, _TTL_S)
                await pipe.execute()
        except BaseException:
            self._unwritten[:0] = records  # written at the next flush
            raise


def _median(durations: list[float]) -> float | None:
    """The median (no ``statistics`` import: it costs a runner's start-up more than this)."""
    if not durations:
        return None
    ordered, mid = sorted(durations), len(durations) // 2
    middle = ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
    return round(middle, 3)
