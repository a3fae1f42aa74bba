"""Market-data pieces on their own: the synthetic generator and the rate limiter."""

from __future__ import annotations

import asyncio
import time
from datetime import date

import pytest

from services.runner.pipeline import indicators as ind
from services.runner.pipeline import synthetic
from services.runner.pipeline.data import RateLimiter

pytestmark = pytest.mark.timeout(30)


def test_synthetic_is_deterministic_per_symbol_and_date() -> None:
    a = synthetic.generate("AAPL", date(2025, 1, 1), date(2026, 1, 30))
    b = synthetic.generate("AAPL", date(2025, 1, 1), date(2026, 1, 30))
    shorter = synthetic.generate("AAPL", date(2025, 6, 2), date(2026, 1, 30))
    assert a == b
    assert a.prices.close[-len(shorter.prices.close) :] == shorter.prices.close  # a date's bar never changes
    assert synthetic.generate("MSFT", date(2025, 1, 1), date(2026, 1, 30)).prices.close != a.prices.close


def test_synthetic_data_is_a_year_of_sane_labelled_bars() -> None:
    data = synthetic.generate("ZZZ", date(2025, 1, 1), date(2026, 1, 30))
    p = data.prices
    assert data.demo and data.provider == "synthetic" and len(p.close) >= 252
    assert all(
        lo <= min(o, c) and hi >= max(o, c)
        for o, hi, lo, c in zip(p.open, p.high, p.low, p.close, strict=True)
    )
    assert all(v > 0 for v in p.volume) and p.dates == sorted(p.dates)
    assert data.benchmark is not None and data.benchmark.dates == p.dates
    beta = ind.beta(ind.returns(p.close), ind.returns(data.benchmark.close))
    assert beta is not None and 0.3 < beta < 2.0  # the market factor shows through
    assert data.fundamentals is not None and data.headlines


async def test_rate_limiter_spaces_acquisitions() -> None:
    limiter = RateLimiter(rate_per_s=20.0)
    began = time.monotonic()
    await asyncio.gather(*(limiter.acquire() for _ in range(5)))
    assert time.monotonic() - began >= 4 / 20 - 0.01  # the first goes at once, then one every 50 ms
