"""Deterministic demo market data: the same symbol and date always give the same numbers.

A geometric random walk with regimes (bull, bear, calm) driven by a shared market factor, so
beta against the synthetic benchmark means something; fundamentals and headlines are drawn from
the same seed. Everything produced here is labelled demo data.
"""

from __future__ import annotations

import hashlib
import math
import random
from datetime import date, timedelta

from shared.results import Fundamentals, Headline, MarketData, PriceSeries

EPOCH = date(2018, 1, 1)
MARKET_SEED = "__synthetic_market__"
BENCHMARK_SYMBOL = "SYNTH-INDEX"
# (daily drift, daily volatility) per regime, and the chance a regime lasts another day.
REGIMES = ((0.0007, 0.009), (-0.0009, 0.017), (0.0001, 0.006))
STAY = 0.985
# Symbols the demo stands in for: large US listings a user is likely to try. Any other symbol
# still gets deterministic numbers, but is labelled as having no real market behind it.
KNOWN_SYMBOLS = frozenset(
    "AAPL ABBV ABT ACN ADBE AMD AMGN AMZN AVGO AXP BA BAC BKNG BLK BRK.B C CAT COST CRM CSCO CVX "
    "DIS GE GOOG GOOGL GS HD HON IBM INTC INTU JNJ JPM KO LIN LLY LMT MA MCD META MMM MRK MS MSFT "
    "NFLX NKE NVDA ORCL PEP PFE PG PLTR PYPL QCOM SBUX SPY QQQ T TMO TSLA TXN UBER UNH UNP UPS V "
    "VZ WFC WMT XOM".split()
)

GOOD_NEWS = (
    "{name} beats quarterly earnings expectations",
    "{name} raises full-year guidance",
    "Analysts upgrade {name} on strong demand",
    "{name} announces share buyback programme",
    "{name} wins major multi-year contract",
)
BAD_NEWS = (
    "{name} misses revenue estimates",
    "{name} cuts outlook amid softer demand",
    "Regulators open inquiry into {name}",
    "{name} shares slip after analyst downgrade",
    "{name} faces supply-chain delays",
)
NEUTRAL_NEWS = (
    "{name} to present at industry conference",
    "{name} names new chief financial officer",
    "{name} schedules quarterly results call",
)


def seed_of(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def business_days(start: date, end: date) -> list[date]:
    days, day = [], start
    while day <= end:
        if day.weekday() < 5:
            days.append(day)
        day += timedelta(days=1)
    return days


def _regime_returns(rng: random.Random, count: int) -> list[float]:
    regime, out = 0, []
    for _ in range(count):
        if rng.random() > STAY:
            regime = rng.randrange(len(REGIMES))
        drift, vol = REGIMES[regime]
        out.append(rng.gauss(drift, vol))
    return out


def _market_returns(count: int) -> list[float]:
    return _regime_returns(random.Random(seed_of(MARKET_SEED)), count)


def _asset_returns(symbol: str, market: list[float]) -> list[float]:
    rng = random.Random(seed_of(symbol))
    beta, idio = rng.uniform(0.6, 1.6), rng.uniform(0.006, 0.018)
    alpha = rng.uniform(-0.0018, 0.0006)
    own = _regime_returns(rng, len(market))
    return [alpha + beta * m + 0.5 * o + rng.gauss(0.0, idio) for m, o in zip(market, own, strict=True)]


def _bars(symbol: str, days: list[date], rets: list[float], start_price: float) -> PriceSeries:
    rng = random.Random(seed_of(symbol + ":bars"))
    base_volume = rng.uniform(2e6, 6e7)
    closes, opens, highs, lows, volumes = [], [], [], [], []
    prev = start_price
    for ret in rets:
        close = max(prev * math.exp(ret), 0.5)
        open_ = prev * math.exp(rng.gauss(0.0, 0.003))
        spread = abs(rng.gauss(0.0, 0.006))
        closes.append(round(close, 2))
        opens.append(round(open_, 2))
        highs.append(round(max(open_, close) * (1 + spread), 2))
        lows.append(round(min(open_, close) * (1 - spread), 2))
        volumes.append(float(round(base_volume * math.exp(rng.gauss(0, 0.25)) * (1 + 40 * abs(ret)))))
        prev = close
    return PriceSeries(
        dates=[d.isoformat() for d in days], open=opens, high=highs, low=lows, close=closes, volume=volumes
    )


def _series(symbol: str, rets: list[float], all_days: list[date], start: date) -> PriceSeries:
    start_price = random.Random(seed_of(symbol + ":price")).uniform(20, 400)
    full = _bars(symbol, all_days, rets, start_price)
    first = next((i for i, d in enumerate(all_days) if d >= start), len(all_days))
    return PriceSeries(
        dates=full.dates[first:],
        open=full.open[first:],
        high=full.high[first:],
        low=full.low[first:],
        close=full.close[first:],
        volume=full.volume[first:],
    )


def fundamentals(symbol: str) -> Fundamentals:
    rng = random.Random(seed_of(symbol + ":fundamentals"))
    return Fundamentals(
        pe_ratio=round(rng.uniform(7, 48), 1),
        pb_ratio=round(rng.uniform(0.8, 14), 1),
        revenue_growth=round(rng.uniform(-0.12, 0.38), 3),
        profit_margin=round(rng.uniform(-0.05, 0.35), 3),
        debt_to_equity=round(rng.uniform(0.05, 2.6), 2),
        dividend_yield=round(rng.choice((0.0, rng.uniform(0.003, 0.045))), 4),
        market_cap=round(rng.uniform(2e9, 2.5e12), -6),
    )


def headlines(symbol: str, prices: PriceSeries, count: int = 8) -> list[Headline]:
    """Headlines over the last weeks, their tone leaning with the price move that day."""
    rng = random.Random(seed_of(f"{symbol}:news:{prices.dates[-1]}"))
    window = min(30, len(prices.dates) - 1)
    picks = sorted(rng.sample(range(len(prices.dates) - window, len(prices.dates)), k=min(count, window)))
    out = []
    for i in reversed(picks):
        move = prices.close[i] / prices.close[i - 1] - 1.0
        tone = math.tanh(move * 60) + rng.gauss(0.0, 0.35)
        pool = GOOD_NEWS if tone > 0.25 else BAD_NEWS if tone < -0.25 else NEUTRAL_NEWS
        title = rng.choice(pool).format(name=symbol)
        out.append(
            Headline(
                date=prices.dates[i],
                title=title,
                source="synthetic wire",
                sentiment=round(max(-1.0, min(1.0, tone)), 2),
            )
        )
    return out


def generate(symbol: str, start: date, end: date) -> MarketData:
    """Demo data for ``symbol`` from ``start`` to ``end`` (inclusive), with a benchmark."""
    all_days = business_days(EPOCH, end)
    market = _market_returns(len(all_days))
    prices = _series(symbol, _asset_returns(symbol, market), all_days, start)
    benchmark = _series(BENCHMARK_SYMBOL, market, all_days, start)
    return MarketData(
        symbol=symbol,
        provider="synthetic",
        demo=True,
        listed=symbol.upper() in KNOWN_SYMBOLS,
        prices=prices,
        fundamentals=fundamentals(symbol),
        headlines=headlines(symbol, prices),
        benchmark=benchmark,
    )
