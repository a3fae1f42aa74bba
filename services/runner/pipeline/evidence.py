"""What each analyst finds in the data, computed in code before any model writes a word.

An analyst's evidence is its numbers plus findings: short statements citing those numbers, each
weighted (+ bullish, - bearish). The score is the clipped sum of the weights, so the signal and
the final decision follow from the numbers whatever model writes the prose.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

import msgspec

from services.runner.pipeline import indicators as ind
from shared.results import MarketData, Signal

Number = float | str | None


class Finding(msgspec.Struct, frozen=True):
    text: str
    weight: float


class Evidence(msgspec.Struct, frozen=True, kw_only=True):
    analyst: str
    numbers: dict[str, Number]
    findings: list[Finding]
    score: float
    signal: Signal


def signal_of(score: float) -> Signal:
    return "bullish" if score > 0.15 else "bearish" if score < -0.15 else "neutral"


def _evidence(analyst: str, numbers: dict[str, Number], findings: list[Finding]) -> Evidence:
    score = round(max(-1.0, min(1.0, sum(f.weight for f in findings))), 3)
    rounded = {k: round(v, 4) if isinstance(v, float) else v for k, v in numbers.items()}
    return Evidence(analyst=analyst, numbers=rounded, findings=findings, score=score, signal=signal_of(score))


def _pct(value: float) -> str:
    return f"{value * 100:+.1f}%"


def market(data: MarketData) -> Evidence:
    """Technicals: trend against moving averages, RSI(14), MACD(12,26,9), volume trend."""
    closes, last = data.prices.close, data.prices.close[-1]
    sma50, sma200 = ind.sma(closes, 50), ind.sma(closes, 200)
    rsi, macd = ind.rsi(closes), ind.macd(closes)
    vol_trend, ret_3m = ind.volume_trend(data.prices.volume), ind.total_return(closes, 63)
    numbers: dict[str, Number] = {
        "last_close": last,
        "sma20": ind.sma(closes, 20),
        "sma50": sma50,
        "sma200": sma200,
        "ema12": ind.ema(closes, 12),
        "ema26": ind.ema(closes, 26),
        "rsi14": rsi,
        "macd": macd.line if macd else None,
        "macd_signal": macd.signal if macd else None,
        "macd_histogram": macd.histogram if macd else None,
        "volume_trend": vol_trend,
        "return_3m": ret_3m,
    }
    findings = _average_findings(last, sma50, sma200)
    if rsi is not None:
        findings.append(_rsi_finding(rsi))
    if macd is not None:
        findings.append(_macd_finding(macd))
    if ret_3m is not None:
        findings.append(Finding(f"three-month return {_pct(ret_3m)}", max(-0.25, min(0.25, ret_3m))))
    if vol_trend is not None and abs(vol_trend) > 0.1:
        findings.append(Finding(f"volume running {_pct(vol_trend)} against its 60-day average", 0.0))
    return _evidence("market", numbers, findings)


def _average_findings(last: float, sma50: float | None, sma200: float | None) -> list[Finding]:
    """The close against the 50-day average, and the 50-day against the 200-day."""
    findings: list[Finding] = []
    if sma50 is not None:
        above = last > sma50
        findings.append(
            Finding(
                f"close {last:.2f} is {'above' if above else 'below'} the 50-day average {sma50:.2f}",
                0.2 if above else -0.2,
            )
        )
    if sma50 is not None and sma200 is not None:
        golden = sma50 > sma200
        findings.append(
            Finding(
                f"the 50-day average {'is above' if golden else 'is below'} the 200-day {sma200:.2f}",
                0.2 if golden else -0.2,
            )
        )
    return findings


def _macd_finding(macd: ind.Macd) -> Finding:
    up = macd.histogram > 0
    return Finding(
        f"MACD {macd.line:.2f} is {'above' if up else 'below'} its signal {macd.signal:.2f}"
        f" (histogram {macd.histogram:+.2f})",
        0.2 if up else -0.2,
    )


def _rsi_finding(rsi: float) -> Finding:
    if rsi >= 70:
        return Finding(f"RSI(14) at {rsi:.1f} is overbought", -0.25)
    if rsi <= 30:
        return Finding(f"RSI(14) at {rsi:.1f} is oversold", 0.25)
    return Finding(
        f"RSI(14) at {rsi:.1f} shows {'firm' if rsi > 50 else 'soft'} momentum", 0.1 if rsi > 50 else -0.1
    )


def fundamentals(data: MarketData) -> Evidence:
    """Valuation, growth, margins and leverage, where the provider has them."""
    f = data.fundamentals
    if f is None:
        return _evidence(
            "fundamentals",
            {"available": "no"},
            [Finding(f"{data.provider} data carries no fundamentals", 0.0)],
        )
    numbers: dict[str, Number] = {
        "pe_ratio": f.pe_ratio,
        "pb_ratio": f.pb_ratio,
        "revenue_growth": f.revenue_growth,
        "profit_margin": f.profit_margin,
        "debt_to_equity": f.debt_to_equity,
        "dividend_yield": f.dividend_yield,
        "market_cap": f.market_cap,
    }
    findings: list[Finding] = []
    if f.pe_ratio is not None:
        weight = 0.25 if f.pe_ratio < 15 else -0.25 if f.pe_ratio > 35 else 0.0
        findings.append(
            Finding(
                f"P/E of {f.pe_ratio:.1f} ({'cheap' if weight > 0 else 'rich' if weight < 0 else 'fair'})",
                weight,
            )
        )
    if f.revenue_growth is not None:
        findings.append(
            Finding(f"revenue growth {_pct(f.revenue_growth)}", max(-0.3, min(0.3, f.revenue_growth * 1.5)))
        )
    if f.profit_margin is not None:
        findings.append(
            Finding(
                f"profit margin {_pct(f.profit_margin)}",
                0.2 if f.profit_margin > 0.15 else -0.2 if f.profit_margin < 0.03 else 0.0,
            )
        )
    if f.debt_to_equity is not None:
        findings.append(
            Finding(
                f"debt to equity {f.debt_to_equity:.2f}",
                -0.2 if f.debt_to_equity > 2 else 0.1 if f.debt_to_equity < 0.5 else 0.0,
            )
        )
    return _evidence("fundamentals", numbers, findings)


def news(data: MarketData) -> Evidence:
    """Headline count and tone."""
    items = data.headlines
    if not items:
        return _evidence(
            "news", {"headlines": 0.0}, [Finding(f"{data.provider} data carries no headlines", 0.0)]
        )
    tone = sum(h.sentiment for h in items) / len(items)
    positive = sum(1 for h in items if h.sentiment > 0.25)
    negative = sum(1 for h in items if h.sentiment < -0.25)
    numbers: dict[str, Number] = {
        "headlines": float(len(items)),
        "average_tone": tone,
        "positive": float(positive),
        "negative": float(negative),
        "latest": items[0].title,
    }
    findings = [
        Finding(
            f"{len(items)} headlines, {positive} positive and {negative} negative, average tone {tone:+.2f}",
            max(-0.6, min(0.6, tone)),
        ),
        Finding(
            f'latest: "{items[0].title}" ({items[0].date})', max(-0.2, min(0.2, items[0].sentiment * 0.2))
        ),
    ]
    return _evidence("news", numbers, findings)


def sentiment(data: MarketData) -> Evidence:
    """Crowd mood: short-term returns, share of up days, volume surges and headline tone."""
    closes, daily = data.prices.close, ind.returns(data.prices.close)
    ret_5d, ret_1m = ind.total_return(closes, 5), ind.total_return(closes, 21)
    recent = daily[-20:]
    up_share = sum(1 for r in recent if r > 0) / len(recent) if recent else None
    surge = ind.volume_trend(data.prices.volume, 5, 60)
    tone = sum(h.sentiment for h in data.headlines) / len(data.headlines) if data.headlines else None
    numbers: dict[str, Number] = {
        "return_5d": ret_5d,
        "return_1m": ret_1m,
        "up_days_share_20d": up_share,
        "volume_surge_5d": surge,
        "headline_tone": tone,
    }
    findings: list[Finding] = []
    if ret_1m is not None:
        findings.append(Finding(f"one-month return {_pct(ret_1m)}", max(-0.3, min(0.3, ret_1m * 3))))
    if up_share is not None:
        findings.append(
            Finding(
                f"{up_share * 100:.0f}% of the last 20 sessions closed up", round((up_share - 0.5) * 0.8, 3)
            )
        )
    if surge is not None and ret_5d is not None and surge > 0.3:
        findings.append(
            Finding(f"volume surge of {_pct(surge)} on a {_pct(ret_5d)} week", 0.2 if ret_5d > 0 else -0.2)
        )
    if tone is not None:
        findings.append(Finding(f"headline tone {tone:+.2f}", max(-0.2, min(0.2, tone * 0.3))))
    return _evidence("sentiment", numbers, findings)


def risk(data: MarketData) -> Evidence:
    """Volatility, drawdown, beta and value at risk."""
    daily = ind.returns(data.prices.close)
    vol, mdd, var95 = (
        ind.annualised_volatility(daily),
        ind.max_drawdown(data.prices.close),
        ind.historical_var(daily),
    )
    beta = ind.beta(daily, ind.returns(data.benchmark.close)) if data.benchmark else None
    numbers: dict[str, Number] = {
        "annualised_volatility": vol,
        "max_drawdown": mdd,
        "beta": beta,
        "var95_1d": var95,
    }
    findings: list[Finding] = []
    if vol is not None:
        findings.append(
            Finding(
                f"annualised volatility {vol * 100:.1f}%",
                0.15 if vol < 0.2 else -0.3 if vol > 0.45 else -0.05,
            )
        )
    if mdd is not None:
        findings.append(
            Finding(
                f"maximum drawdown {mdd * 100:.1f}%", -0.3 if mdd < -0.35 else -0.1 if mdd < -0.2 else 0.1
            )
        )
    if beta is not None:
        findings.append(
            Finding(
                f"beta {beta:.2f} against the benchmark", -0.15 if beta > 1.3 else 0.1 if beta < 0.8 else 0.0
            )
        )
    if var95 is not None:
        findings.append(
            Finding(f"one-day 95% VaR {var95 * 100:.2f}% of the position", -0.1 if var95 > 0.035 else 0.0)
        )
    return _evidence("risk", numbers, findings)


def invest(data: MarketData) -> Evidence:
    """The long-term thesis: one-year return, risk-adjusted return and distance from the high."""
    closes, daily = data.prices.close, ind.returns(data.prices.close)
    ret_1y = ind.total_return(closes, min(252, len(closes) - 1))
    sharpe = ind.sharpe(daily)
    high = max(closes[-252:])
    from_high = closes[-1] / high - 1.0
    pe = data.fundamentals.pe_ratio if data.fundamentals else None
    numbers: dict[str, Number] = {
        "return_1y": ret_1y,
        "sharpe": sharpe,
        "from_52w_high": from_high,
        "pe_ratio": pe,
    }
    findings: list[Finding] = []
    if ret_1y is not None:
        findings.append(Finding(f"one-year return {_pct(ret_1y)}", max(-0.35, min(0.35, ret_1y))))
    if sharpe is not None:
        findings.append(Finding(f"Sharpe ratio {sharpe:.2f}", max(-0.3, min(0.3, sharpe * 0.2))))
    findings.append(
        Finding(
            f"{_pct(from_high)} from the 52-week high {high:.2f}",
            0.1 if from_high > -0.05 else -0.15 if from_high < -0.25 else 0.0,
        )
    )
    if pe is not None and pe > 40:
        findings.append(Finding(f"a P/E of {pe:.1f} leaves little room for disappointment", -0.15))
    return _evidence("invest", numbers, findings)


ANALYSES: dict[str, Callable[[MarketData], Evidence]] = {
    "market": market,
    "fundamentals": fundamentals,
    "news": news,
    "sentiment": sentiment,
    "risk": risk,
    "invest": invest,
}


_BOOKS: dict[int, dict[str, Evidence]] = {}


def of(analyst: str, data: MarketData) -> Evidence:
    """``ANALYSES[analyst](data)``, computed once per data object: a run asks for an analyst's
    evidence in its report, tools, debate sides, risk numbers and key risks, and the runs of a
    process on one symbol and day share one data object (data.MarketDataService)."""
    book = _BOOKS.get(id(data))
    if book is None:
        book = _BOOKS[id(data)] = {}
        weakref.finalize(data, _BOOKS.pop, id(data), None)  # ids are reused once data is gone
    found = book.get(analyst)
    if found is None:
        found = book[analyst] = ANALYSES[analyst](data)
    return found
