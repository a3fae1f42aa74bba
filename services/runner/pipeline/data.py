"""Market data behind one interface, with a shared Redis cache and a per-provider rate limit."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from datetime import date, timedelta
from pathlib import Path
from typing import Protocol

import msgspec
from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.runner.pipeline import csvdata, synthetic
from services.runner.pipeline.base import PipelineError
from services.runner.pipeline.settings import PipelineSettings
from shared.results import MarketData, PriceSeries

logger = logging.getLogger(__name__)

HELD_S = 60.0
HELD_ENTRIES = 32
"""The decoded data a process keeps for the runs it starts next (each ~130 KB decoded): runs on
one symbol and day share one immutable object instead of a copy each, and its evidence is
computed once (evidence.of). Well inside the Redis cache's lifetime, so nothing seen changes."""


class MarketDataProvider(Protocol):
    """Where prices (and, where available, fundamentals and headlines) come from."""

    name: str
    online: bool
    """Online providers go through the rate limiter; local ones need not wait."""

    async def fetch(self, symbol: str, end: date) -> MarketData: ...


class SyntheticProvider:
    """Deterministic demo data (the default)."""

    name = "synthetic"
    online = False

    def __init__(self, lookback_days: int) -> None:
        self.lookback_days = lookback_days

    async def fetch(self, symbol: str, end: date) -> MarketData:
        return synthetic.generate(symbol, end - timedelta(days=self.lookback_days), end)


class CsvProvider:
    """A folder of ``<SYMBOL>.csv`` OHLCV files; ``<benchmark>.csv`` there gives beta."""

    name = "csv"
    online = False

    def __init__(self, folder: Path | None, lookback_days: int, benchmark: str) -> None:
        if folder is None:
            raise PipelineError("data_unavailable", "the csv provider needs TT_CSV_DIR")
        self.folder, self.lookback_days, self.benchmark = folder, lookback_days, benchmark

    async def fetch(self, symbol: str, end: date) -> MarketData:
        return await asyncio.to_thread(self._load, symbol, end)

    def _load(self, symbol: str, end: date) -> MarketData:
        prices = csvdata.read_prices(csvdata.find(self.folder, symbol), end, self.lookback_days)
        return MarketData(
            symbol=symbol,
            provider=self.name,
            demo=False,
            prices=prices,
            benchmark=self._benchmark(symbol, end),
        )

    def _benchmark(self, symbol: str, end: date) -> PriceSeries | None:
        if not self.benchmark or symbol == self.benchmark:
            return None
        path = csvdata.find(self.folder, self.benchmark)
        return csvdata.read_prices(path, end, self.lookback_days) if path.is_file() else None


class YFinanceProvider:
    """Yahoo Finance through the optional ``yfinance`` extra (online; not exercised by tests)."""

    name = "yfinance"
    online = True

    def __init__(self, lookback_days: int, benchmark: str) -> None:
        self.lookback_days, self.benchmark = lookback_days, benchmark

    async def fetch(self, symbol: str, end: date) -> MarketData:
        return await asyncio.to_thread(self._load, symbol, end)

    def _load(self, symbol: str, end: date) -> MarketData:
        try:
            import yfinance  # type: ignore[import-not-found,unused-ignore]
        except ImportError:
            raise PipelineError("data_unavailable", "install the yfinance extra to use it") from None
        start = end - timedelta(days=self.lookback_days)
        try:
            prices = self._history(yfinance, symbol, start, end)
            bench = self._history(yfinance, self.benchmark, start, end) if self.benchmark else None
        except PipelineError:
            raise
        except Exception as exc:  # the library raises anything from network to parse errors
            raise PipelineError("data_unavailable", f"yfinance: {exc}", transient=True) from exc
        return MarketData(symbol=symbol, provider=self.name, demo=False, prices=prices, benchmark=bench)

    @staticmethod
    def _history(yfinance: object, symbol: str, start: date, end: date) -> PriceSeries:
        frame = yfinance.Ticker(symbol).history(  # type: ignore[attr-defined]
            start=start.isoformat(), end=(end + timedelta(days=1)).isoformat(), interval="1d"
        )
        if frame is None or len(frame) < 2:
            raise PipelineError("unknown_symbol", f"yfinance has no daily prices for {symbol}")
        return PriceSeries(
            dates=[d.date().isoformat() for d in frame.index],
            **{c.lower(): [float(v) for v in frame[c]] for c in ("Open", "High", "Low", "Close", "Volume")},
        )


class RateLimiter:
    """At most ``rate`` acquisitions a second, spaced evenly (per process, per provider)."""

    def __init__(self, rate_per_s: float) -> None:
        self.interval = 1.0 / rate_per_s
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        async with self._lock:
            now = time.monotonic()
            wait = self._next - now
            self._next = max(now, self._next) + self.interval
        if wait > 0:
            await asyncio.sleep(wait)


class MarketDataService:
    """Fetch through a provider, once per provider, symbol and day across every run sharing Redis."""

    def __init__(self, settings: PipelineSettings, redis: Redis) -> None:
        self.settings, self.redis = settings, redis
        self._providers: dict[str, MarketDataProvider] = {}
        self._limiters: dict[str, RateLimiter] = {}
        self._inflight: dict[str, asyncio.Lock] = {}
        self._codec = msgspec.json.Decoder(MarketData)
        self._held: OrderedDict[str, tuple[float, MarketData]] = OrderedDict()
        self.fetches = 0

    def provider(self, name: str) -> MarketDataProvider:
        if name not in self._providers:
            self._providers[name] = self._build(name)
        return self._providers[name]

    def _build(self, name: str) -> MarketDataProvider:
        s = self.settings
        match name:
            case "synthetic":
                return SyntheticProvider(s.lookback_days)
            case "csv":
                return CsvProvider(s.csv_dir, s.lookback_days, s.benchmark_symbol)
            case "yfinance":
                return YFinanceProvider(s.lookback_days, s.benchmark_symbol)
        raise PipelineError("unknown_provider", f"unknown data provider {name!r}")

    async def get(self, provider_name: str, symbol: str, end: date) -> MarketData:
        """Cached data for ``symbol`` as of ``end``; the cache is an optimisation, never a failure."""
        provider = self.provider(provider_name)
        key = self.settings.keys.market_cache(provider.name, symbol, end.isoformat())
        held = self._recent(key)
        if held is not None:
            return held
        async with self._inflight.setdefault(key, asyncio.Lock()):
            try:
                data = self._recent(key) or await self._cached(key)
                if data is None:
                    data = await self._fetch(provider, symbol, end)
                    await self._store(key, data)
                self._hold(key, data)
                return data
            finally:
                self._inflight.pop(key, None)

    def _recent(self, key: str) -> MarketData | None:
        held = self._held.get(key)
        if held is None or held[0] < time.monotonic():
            return None
        return held[1]

    def _hold(self, key: str, data: MarketData) -> None:
        self._held[key] = (time.monotonic() + HELD_S, data)
        self._held.move_to_end(key)
        while len(self._held) > HELD_ENTRIES:
            self._held.popitem(last=False)

    async def fresh(self, provider_name: str, symbol: str, end: date) -> MarketData:
        """Data for ``symbol`` as of ``end`` straight from the provider (rate-limited, not cached):
        an outcome waiting for a close is measured on the newest data the provider has."""
        return await self._fetch(self.provider(provider_name), symbol, end)

    async def _cached(self, key: str) -> MarketData | None:
        try:
            raw = await self.redis.get(key)
        except RedisError as exc:
            logger.warning("market cache unavailable", extra={"key": key, "error": str(exc)})
            return None
        try:
            return None if raw is None else self._codec.decode(raw)
        except (msgspec.ValidationError, msgspec.DecodeError):
            logger.warning("market cache entry unreadable, fetching again", extra={"key": key})
            return None

    async def _store(self, key: str, data: MarketData) -> None:
        try:
            await self.redis.set(key, msgspec.json.encode(data), ex=self.settings.market_cache_ttl_s)
        except RedisError as exc:
            logger.warning("market cache not written", extra={"key": key, "error": str(exc)})

    async def _fetch(self, provider: MarketDataProvider, symbol: str, end: date) -> MarketData:
        if provider.online:
            limiter = self._limiters.setdefault(provider.name, RateLimiter(self.settings.data_rate_per_s))
            await limiter.acquire()
        self.fetches += 1
        logger.info("fetching market data", extra={"provider": provider.name, "symbol": symbol})
        return await provider.fetch(symbol, end)
