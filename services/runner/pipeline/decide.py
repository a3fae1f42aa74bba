"""From evidence scores to a stance, a trade and a rating: the numbers decide, in code.

The offline writer answers with exactly these; a real model receives them as the quantitative
reference and may argue otherwise, but its answer is still validated into the same structs.
"""

from __future__ import annotations

from collections.abc import Sequence

from services.runner.pipeline import indicators as ind
from shared.results import AnalystReport, Assessment, Decision, MarketData, Rating, Signal, TradeProposal

RATINGS: tuple[tuple[float, Rating], ...] = (
    (0.45, "Buy"),
    (0.12, "Overweight"),
    (-0.12, "Hold"),
    (-0.45, "Underweight"),
)


def composite(reports: Sequence[AnalystReport]) -> float:
    """The mean analyst score, -1 … +1 (0 without reports)."""
    return round(sum(r.score for r in reports) / len(reports), 3) if reports else 0.0


def lean(reports: Sequence[AnalystReport]) -> Signal:
    """The research manager's lean, on the rating's lines: a neutral lean beside a SELL read as a
    contradiction, so both follow the same thresholds."""
    decision = decision_of(rating_of(composite(reports)))
    return "bullish" if decision == "BUY" else "bearish" if decision == "SELL" else "neutral"


def rating_of(score: float) -> Rating:
    return next((rating for floor, rating in RATINGS if score > floor), "Sell")


def decision_of(rating: Rating) -> Decision:
    return (
        "BUY" if rating in ("Buy", "Overweight") else "SELL" if rating in ("Sell", "Underweight") else "HOLD"
    )


def agreement(reports: Sequence[AnalystReport], decision: Decision) -> float:
    """The share of analysts whose signal points the way of the decision."""
    if not reports:
        return 0.0
    wanted = {"BUY": "bullish", "SELL": "bearish", "HOLD": "neutral"}[decision]
    return sum(1 for r in reports if r.signal == wanted) / len(reports)


def confidence(score: float, reports: Sequence[AnalystReport], decision: Decision) -> float:
    strength = min(1.0, abs(score) / 0.6) if decision != "HOLD" else 1.0 - min(1.0, abs(score) / 0.12)
    return round(max(0.3, min(0.95, 0.35 + 0.35 * strength + 0.25 * agreement(reports, decision))), 2)


def daily_volatility(data: MarketData) -> float:
    vol = ind.stdev(ind.returns(data.prices.close))
    return vol if vol else 0.02


def trade(data: MarketData, reports: Sequence[AnalystReport]) -> TradeProposal:
    """Entry at the last close, a stop two daily-volatility-weeks away, a 2:1 target, sized by risk."""
    score = composite(reports)
    action = decision_of(rating_of(score))
    entry, vol = data.prices.close[-1], daily_volatility(data)
    distance = round(entry * min(0.25, 2 * vol * 5**0.5), 2)
    sign = -1 if action == "SELL" else 1
    stop = round(entry - sign * distance, 2)
    target = round(entry + sign * 2 * distance, 2) if action != "HOLD" else None
    risk_pct = 1.0 if action != "HOLD" else 0.0
    position = round(
        min(20.0, risk_pct / max(distance / entry, 0.005)) * min(1.0, abs(score) / 0.45 + 0.25), 1
    )
    rationale = (
        f"Composite evidence score {score:+.2f} gives {action}; entry {entry:.2f}, stop {stop:.2f} "
        f"({distance / entry * 100:.1f}% away, about two weekly standard deviations), "
        + (
            f"target {target:.2f} for 2:1 reward to risk; "
            if target is not None
            else "no target while holding; "
        )
        + f"size {position:.1f}% of the portfolio risks about {risk_pct:.0f}% of it."
    )
    return TradeProposal(
        action=action, entry=entry, stop=stop, target=target, position_pct=position, rationale=rationale
    )


def _risk_numbers(reports: Sequence[AnalystReport]) -> str | None:
    risk = next((r for r in reports if r.analyst == "risk"), None)
    if risk is None:
        return None
    e = risk.evidence
    parts = [
        f"{label} {value * scale:.1f}%"
        for key, label, scale in (
            ("annualised_volatility", "volatility", 100),
            ("max_drawdown", "max drawdown", 100),
            ("var95_1d", "one-day 95% VaR", 100),
        )
        if isinstance(value := e.get(key), float)
    ]
    return f"Price risk: {', '.join(parts)}." if parts else None


def key_risks(reports: Sequence[AnalystReport], limit: int = 4) -> list[str]:
    """What argues against the stance: bearish analysts' summaries, then the measured price risk."""
    worst = sorted((r for r in reports if r.score < 0), key=lambda r: r.score)
    risks = [f"{r.analyst} analyst: {r.summary}" for r in worst][: limit - 1]
    measured = _risk_numbers(reports)
    risks += [measured] if measured else []
    return risks or ["No analyst found material downside; the main risk is a change of regime."]


def assessment(data: MarketData, reports: Sequence[AnalystReport], horizon: str = "3-6 months") -> Assessment:
    score = composite(reports)
    rating = rating_of(score)
    decision = decision_of(rating)
    bulls = [r.analyst for r in reports if r.signal == "bullish"]
    bears = [r.analyst for r in reports if r.signal == "bearish"]
    rationale = (
        f"{data.symbol}: composite evidence score {score:+.2f} across {len(reports)} analysts "
        f"(bullish: {', '.join(bulls) or 'none'}; bearish: {', '.join(bears) or 'none'}) "
        f"maps to {rating}, so {decision}."
    )
    return Assessment(
        decision=decision,
        rating=rating,
        confidence=confidence(score, reports, decision),
        horizon=horizon,
        rationale=rationale,
        key_risks=key_risks(reports),
    )
