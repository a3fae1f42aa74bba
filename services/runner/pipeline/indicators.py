"""Technical and risk indicators: pure functions over plain lists of floats.

Each returns None when the series is too short to say anything, never a made-up number.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import msgspec

TRADING_DAYS = 252


class Macd(msgspec.Struct, frozen=True):
    line: float
    signal: float
    histogram: float


def returns(closes: Sequence[float]) -> list[float]:
    """Simple daily returns: close[t] / close[t-1] - 1."""
    return [b / a - 1.0 for a, b in itertools.pairwise(closes) if a != 0]


def total_return(closes: Sequence[float], days: int | None = None) -> float | None:
    """Return over the last ``days`` bars (the whole series when None)."""
    window = closes if days is None else closes[-(days + 1) :]
    if len(window) < 2 or (days is not None and len(closes) < days + 1) or window[0] == 0:
        return None
    return window[-1] / window[0] - 1.0


def sma_series(values: Sequence[float], period: int) -> list[float]:
    """Simple moving averages; element i covers values[i : i + period]."""
    if period < 1 or len(values) < period:
        return []
    window = sum(values[:period])
    out = [window / period]
    for i in range(period, len(values)):
        window += values[i] - values[i - period]
        out.append(window / period)
    return out


def sma(values: Sequence[float], period: int) -> float | None:
    """The latest simple moving average."""
    if period < 1 or len(values) < period:
        return None
    return sum(values[-period:]) / period


def ema_series(values: Sequence[float], period: int) -> list[float]:
    """Exponential moving averages (alpha = 2 / (period + 1)), seeded with the first SMA."""
    if period < 1 or len(values) < period:
        return []
    alpha = 2.0 / (period + 1)
    out = [sum(values[:period]) / period]
    for value in values[period:]:
        out.append(alpha * value + (1 - alpha) * out[-1])
    return out


def ema(values: Sequence[float], period: int) -> float | None:
    series = ema_series(values, period)
    return series[-1] if series else None


def rsi(closes: Sequence[float], period: int = 14) -> float | None:
    """Wilder's relative strength index: averages seeded with a simple mean, then smoothed."""
    if len(closes) < period + 1:
        return None
    changes = [b - a for a, b in itertools.pairwise(closes)]
    gain = sum(max(c, 0.0) for c in changes[:period]) / period
    loss = sum(max(-c, 0.0) for c in changes[:period]) / period
    for change in changes[period:]:
        gain = (gain * (period - 1) + max(change, 0.0)) / period
        loss = (loss * (period - 1) + max(-change, 0.0)) / period
    if loss == 0:
        return 100.0 if gain > 0 else 50.0
    return 100.0 - 100.0 / (1.0 + gain / loss)


def macd(closes: Sequence[float], fast: int = 12, slow: int = 26, signal: int = 9) -> Macd | None:
    """MACD line (EMA fast - EMA slow), its signal EMA and the histogram, at the last bar."""
    slow_series = ema_series(closes, slow)
    fast_series = ema_series(closes, fast)[-len(slow_series) :] if slow_series else []
    line = [f - s for f, s in zip(fast_series, slow_series, strict=True)]
    signal_series = ema_series(line, signal)
    if not signal_series:
        return None
    return Macd(line=line[-1], signal=signal_series[-1], histogram=line[-1] - signal_series[-1])


def volume_trend(volumes: Sequence[float], short: int = 20, long: int = 60) -> float | None:
    """Recent volume against its longer average: mean(last short) / mean(last long) - 1."""
    recent, base = sma(volumes, short), sma(volumes, long)
    if recent is None or base is None or base == 0:
        return None
    return recent / base - 1.0


def stdev(values: Sequence[float]) -> float | None:
    """Sample standard deviation (n - 1)."""
    if len(values) < 2:
        return None
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def annualised_volatility(daily_returns: Sequence[float], periods: int = TRADING_DAYS) -> float | None:
    """Sample standard deviation of daily returns scaled by sqrt(periods)."""
    sd = stdev(daily_returns)
    return None if sd is None else sd * math.sqrt(periods)


def max_drawdown(closes: Sequence[float]) -> float | None:
    """The deepest peak-to-trough fall, as a negative fraction (0.0 when prices never fell)."""
    if len(closes) < 2:
        return None
    peak, worst = closes[0], 0.0
    for price in closes:
        peak = max(peak, price)
        if peak > 0:
            worst = min(worst, price / peak - 1.0)
    return worst


def beta(asset: Sequence[float], benchmark: Sequence[float]) -> float | None:
    """Cov(asset, benchmark) / Var(benchmark) over the common (latest) returns."""
    n = min(len(asset), len(benchmark))
    if n < 3:
        return None
    a, b = asset[-n:], benchmark[-n:]
    mean_a, mean_b = sum(a) / n, sum(b) / n
    var_b = sum((x - mean_b) ** 2 for x in b)
    if var_b == 0:
        return None
    return sum((x - mean_a) * (y - mean_b) for x, y in zip(a, b, strict=True)) / var_b


def historical_var(daily_returns: Sequence[float], confidence: float = 0.95) -> float | None:
    """Historical one-day value at risk, as a positive loss fraction.

    The empirical quantile by the lower order statistic: sort ascending, take the
    ceil(n * (1 - confidence))-th smallest return, and report its loss.
    """
    if len(daily_returns) < 2:
        return None
    ordered = sorted(daily_returns)
    k = max(math.ceil(round(len(ordered) * (1.0 - confidence), 9)) - 1, 0)
    return -ordered[k]


def sharpe(daily_returns: Sequence[float], periods: int = TRADING_DAYS) -> float | None:
    """Annualised mean return over annualised volatility (no risk-free rate)."""
    vol = annualised_volatility(daily_returns, periods)
    if vol is None or vol == 0:
        return None
    return (sum(daily_returns) / len(daily_returns)) * periods / vol
