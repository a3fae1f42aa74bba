"""Indicators against values worked out by hand (and a published RSI example)."""

from __future__ import annotations

import math

import pytest

from services.runner.pipeline import indicators as ind

CLOSES = [10.0, 11.0, 10.5, 11.5, 12.0, 11.0, 11.5, 12.5, 13.0, 12.5]

# StockCharts' RSI(14) worked example (closes and the RSI values printed with it).
WILDER_CLOSES = [
    44.34, 44.09, 44.15, 43.61, 44.33, 44.83, 45.10, 45.42, 45.84, 46.08, 45.89, 46.03, 45.61, 46.28,
    46.28, 46.00, 46.03, 46.41, 46.22, 45.64,
]  # fmt: skip


def approx(value: float) -> object:
    return pytest.approx(value, abs=1e-6)


def test_returns_and_total_return() -> None:
    assert ind.returns([10.0, 11.0, 9.9]) == [approx(0.1), approx(-0.1)]
    assert ind.total_return([10.0, 11.0, 12.1], 2) == approx(0.21)
    assert ind.total_return([10.0, 11.0, 12.1], 1) == approx(0.1)
    assert ind.total_return([10.0, 11.0], 5) is None


def test_simple_moving_average() -> None:
    assert ind.sma(CLOSES, 3) == approx((13 + 12.5 + 12.5) / 3)
    assert ind.sma_series(CLOSES, 3)[0] == approx(10.5)
    assert len(ind.sma_series(CLOSES, 3)) == 8
    assert ind.sma(CLOSES, 11) is None


def test_exponential_moving_average_seeded_with_sma() -> None:
    # alpha = 0.5: 10.5 (seed) → 11 → 11.5 → 11.25 → 11.375 → 11.9375 → 12.46875 → 12.484375
    assert ind.ema_series(CLOSES, 3) == [
        approx(v) for v in (10.5, 11.0, 11.5, 11.25, 11.375, 11.9375, 12.46875, 12.484375)
    ]


def test_rsi_wilder_by_hand() -> None:
    # changes +1 -.5 +1 | +.5 -1 +.5 +1 +.5 -.5; seeds gain 2/3, loss 1/6, then Wilder smoothing
    assert ind.rsi(CLOSES, 3) == pytest.approx(61.1574, abs=1e-3)


def test_rsi_matches_published_example() -> None:
    # The published table rounds its average gain and loss to two decimals, hence the tolerance.
    assert ind.rsi(WILDER_CLOSES[:15], 14) == pytest.approx(70.53, abs=0.1)
    assert ind.rsi(WILDER_CLOSES[:16], 14) == pytest.approx(66.32, abs=0.1)
    assert ind.rsi(WILDER_CLOSES[:20], 14) == pytest.approx(57.97, abs=0.1)


def test_rsi_edges() -> None:
    assert ind.rsi([1.0, 2.0, 3.0, 4.0], 3) == 100.0
    assert ind.rsi([1.0, 2.0], 3) is None


def test_macd_by_hand() -> None:
    # EMA3 - EMA5 from index 4: .5 .25 .208333 .326389 .394676 .268326; signal EMA2 ends .300540
    result = ind.macd(CLOSES, fast=3, slow=5, signal=2)
    assert result is not None
    assert result.line == pytest.approx(0.2683256, abs=1e-6)
    assert result.signal == pytest.approx(0.3005401, abs=1e-6)
    assert result.histogram == pytest.approx(-0.0322145, abs=1e-6)
    assert ind.macd(CLOSES) is None


def test_volume_trend() -> None:
    assert ind.volume_trend([100.0, 200.0, 300.0, 400.0, 500.0, 600.0], short=2, long=4) == approx(
        550 / 450 - 1
    )


def test_annualised_volatility() -> None:
    # mean .005, squared deviations sum .0013, sample variance .0013/3
    expected = math.sqrt(0.0013 / 3) * math.sqrt(252)
    assert ind.annualised_volatility([0.01, -0.02, 0.03, 0.0]) == approx(expected)
    assert ind.annualised_volatility([0.01]) is None


def test_max_drawdown() -> None:
    assert ind.max_drawdown([10.0, 12.0, 9.0, 11.0, 13.0, 10.4]) == approx(-0.25)
    assert ind.max_drawdown([1.0, 2.0, 3.0]) == 0.0


def test_beta() -> None:
    # deviations a: .01 -.02 .02 -.01, b: .005 -.015 .015 -.005 → cov .0007 / var .0005
    assert ind.beta([0.02, -0.01, 0.03, 0.0], [0.01, -0.01, 0.02, 0.0]) == approx(1.4)
    assert ind.beta([0.01, 0.02, 0.03], [0.01, 0.01, 0.01]) is None


def test_historical_var() -> None:
    twenty = [-0.05, -0.04] + [0.01] * 18
    assert ind.historical_var(twenty, 0.95) == approx(0.05)
    assert ind.historical_var(twenty * 2, 0.95) == approx(0.05)
    forty = [-0.05, -0.04, -0.03] + [0.01] * 37
    assert ind.historical_var(forty, 0.95) == approx(0.04)
