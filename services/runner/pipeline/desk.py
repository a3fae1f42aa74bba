"""The desk's numbers after the analysts: each side's evidence, the risk voices' sizes, and the
portfolio manager's reference call. Computed in code; models (offline or real) write the prose.

A point is one analyst finding, tagged with its analyst and weight. Every finding belongs to one
side only (positive weights to the bull, negative to the bear), whichever analyst made it, so no
analyst is cited for both sides at once.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from services.runner.pipeline import decide, evidence
from services.runner.pipeline.evidence import ANALYSES
from shared.results import (
    AnalystReport,
    Assessment,
    Debate,
    MarketData,
    PastCall,
    RiskDebate,
    RiskTurn,
    Signal,
    Stance,
    TradeProposal,
)

Point = tuple[str, str, float]
"""(analyst id, the finding citing its numbers, its weight)."""
STANCES: tuple[Stance, ...] = ("aggressive", "conservative", "neutral")
MAX_VOLATILITY = 0.45
MAX_DRAWDOWN = -0.35
"""Past either limit the conservative voice prevails in the risk debate."""
HORIZON, HORIZON_DAYS = "3 months", 91
LEANS: dict[str, Signal] = {"BUY": "bullish", "SELL": "bearish", "HOLD": "neutral"}


def side_points(data: MarketData, analysts: Sequence[str], bullish: bool) -> list[Point]:
    """One side's findings across the run's analysts, strongest first."""
    found = [(a, f.text, f.weight) for a in analysts if a in ANALYSES for f in evidence.of(a, data).findings]
    chosen = [p for p in found if (p[2] > 0 if bullish else p[2] < 0)]
    return sorted(chosen, key=lambda p: abs(p[2]), reverse=True)


def round_points(points: Sequence[Point], round_: int, per: int = 2) -> list[Point]:
    """The points a side brings in ``round_``: new ones each round, until they run out."""
    return list(points[(round_ - 1) * per : round_ * per])


def risk_numbers(data: MarketData) -> dict[str, float]:
    """Volatility, drawdown, VaR and beta, whether or not the risk analyst was asked."""
    return {k: v for k, v in evidence.of("risk", data).numbers.items() if isinstance(v, float)}


def sizes(trade: TradeProposal) -> dict[Stance, float]:
    """What each voice argues for: more, less, or the trader's size (a hold stays flat but for the
    aggressive voice's starter position)."""
    base = trade.position_pct
    if trade.action == "HOLD":
        return {"aggressive": 2.0, "conservative": 0.0, "neutral": 0.0}
    return {
        "aggressive": round(min(20.0, base * 1.5), 1),
        "conservative": round(base * 0.5, 1),
        "neutral": round(base, 1),
    }


def prevailing(numbers: dict[str, float]) -> Stance:
    vol, mdd = numbers.get("annualised_volatility", 0.0), numbers.get("max_drawdown", 0.0)
    return "conservative" if vol > MAX_VOLATILITY or mdd < MAX_DRAWDOWN else "neutral"


def risk_verdict(
    trade: TradeProposal,
    numbers: dict[str, float],
    sizes: dict[Stance, float],
    turns: list[RiskTurn],
    rounds: int,
) -> RiskDebate:
    """Which voice prevails and the size the desk settles on, said with the numbers that decided."""
    winner = prevailing(numbers)
    vol, mdd = numbers.get("annualised_volatility", 0.0) * 100, numbers.get("max_drawdown", 0.0) * 100
    limits = f"{MAX_VOLATILITY * 100:.0f}% volatility, {MAX_DRAWDOWN * 100:.0f}% drawdown"
    measured = f"measured risk (volatility {vol:.1f}%, drawdown {mdd:.1f}%)"
    verdict = "breaks" if winner == "conservative" else "sits inside"
    why = f"{measured} {verdict} the desk's limits ({limits})"
    size = 0.0 if trade.action == "HOLD" else sizes[winner]
    outcome = (
        "the desk stays flat"
        if trade.action == "HOLD"
        else f"the {trade.action} keeps the trader's {size:.1f}%"
        if size == trade.position_pct
        else f"the {trade.action} is sized at {size:.1f}% (the trader proposed {trade.position_pct:.1f}%)"
    )
    summary = f"After {_plural(rounds, 'round')} the {winner} voice prevails because {why}, so {outcome}."
    return RiskDebate(turns=turns, summary=summary, prevailing=winner, position_pct=size)


def final_size(trade: TradeProposal | None, risk_debate: RiskDebate | None) -> float | None:
    if trade is None or trade.action == "HOLD":
        return 0.0 if trade is not None else None
    if risk_debate is not None and risk_debate.position_pct is not None:
        return risk_debate.position_pct
    return trade.position_pct


def lean_agrees(lean: Signal, decision: str) -> bool:
    return LEANS.get(decision) == lean


def explained(call: Assessment, debate: Debate | None) -> Assessment:
    """A real model's call that departs from the research debate's lean without naming the debate
    gets a sentence saying so: the reader sees the departure, never a silent contradiction."""
    if debate is None or lean_agrees(debate.lean, call.decision) or "debate" in call.rationale.lower():
        return call
    note = (
        f"The research debate leaned {debate.lean}; this {call.decision} departs from it on the "
        "portfolio manager's judgement, which gave no reason."
    )
    return msgspec.structs.replace(call, rationale=f"{call.rationale.rstrip()} {note}")


def _band(rating: str) -> str:
    floors: dict[str, float] = {r: f for f, r in decide.RATINGS}
    ceilings: dict[str, float | None] = {
        "Buy": None,
        "Overweight": 0.45,
        "Hold": 0.12,
        "Underweight": -0.12,
        "Sell": -0.45,
    }
    low, high = floors.get(rating), ceilings[rating]
    if low is None:
        return f"at or below {high:+.2f}"
    return f"above {low:+.2f}" if high is None else f"between {low:+.2f} and {high:+.2f}"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _debate_sentence(debate: Debate | None, decision: str, score: float, rating: str) -> str:
    if debate is None:
        return "No research debate was held, so the call rests on the analysts alone."
    if lean_agrees(debate.lean, decision):
        return f"The research debate leaned {debate.lean}, and this call follows it."
    return (
        f"The research debate leaned {debate.lean}, but the desk still goes {decision} because the "
        f"composite score of {score:+.2f} sits in the {rating} band, which outweighs the debate's lean."
    )


def _position_sentence(trade: TradeProposal | None, size: float | None, last: float) -> str:
    if trade is None or trade.action == "HOLD" or size is None:
        return (
            f"No position is taken; the price target of {last:.2f} is the last close, reviewed in {HORIZON}."
        )
    kept = (
        "stays at" if size == trade.position_pct else f"moves from the proposed {trade.position_pct:.1f}% to"
    )
    target = trade.target if trade.target is not None else last
    move = (target / last - 1) * 100
    return (
        f"After the risk debate the {trade.action} at {trade.entry:.2f} with its stop at {trade.stop:.2f} "
        f"{kept} {size:.1f}% of the portfolio, aiming at {target:.2f} ({move:+.1f}%) within {HORIZON}."
    )


def _memory_sentences(symbol: str, past: Sequence[PastCall]) -> tuple[str, float]:
    """How the desk used its earlier calls on the symbol, and the confidence change that follows."""
    if not past:
        return f"There are no earlier calls on {symbol} to learn from.", 0.0
    told = []
    for call in past:
        if call.realised_return is None:
            told.append(f"{call.decision} on {call.date} at {call.price:.2f} (no later close yet)")
            continue
        mark = "✓" if call.hit else "✗"
        state = "over its horizon" if call.horizon_ended else "so far"
        told.append(
            f"{call.decision} on {call.date} at {call.price:.2f}, "
            f"{call.realised_return * 100:+.1f}% {state} {mark}"
        )
    scored = [c for c in past if c.hit is not None]
    hits = sum(1 for c in scored if c.hit)
    demo = " (demo data)" if any(c.demo for c in past) else ""
    record = f"Earlier calls on {symbol}{demo}: {'; '.join(told)}."
    if len(scored) >= 2 and hits * 2 < len(scored):
        return f"{record} With {hits} of {len(scored)} right, confidence is cut by 0.10.", -0.10
    if scored:
        return f"{record} With {hits} of {len(scored)} right, the record does not change the confidence.", 0.0
    return f"{record} None can be scored yet, so the confidence stands.", 0.0


def key_risks(data: MarketData, reports: Sequence[AnalystReport], limit: int = 4) -> list[str]:
    """What argues against the call, in the bear's findings, then the measured price risk."""
    worst = side_points(data, [r.analyst for r in reports], bullish=False)[: limit - 1]
    risks = [f"{text[0].upper()}{text[1:]} (the {a} analyst, {w:+.2f})" for a, text, w in worst]
    nums = risk_numbers(data)
    if "annualised_volatility" in nums and "max_drawdown" in nums:
        risks.append(
            f"Price risk measured over the year: volatility {nums['annualised_volatility'] * 100:.1f}% "
            f"and a worst drawdown of {nums['max_drawdown'] * 100:.1f}%."
        )
    return risks or ["No analyst found material downside; the main risk is a change of regime."]


def assessment(
    data: MarketData,
    reports: Sequence[AnalystReport],
    debate: Debate | None,
    trade: TradeProposal | None,
    risk_debate: RiskDebate | None,
    past: Sequence[PastCall] = (),
) -> Assessment:
    """The portfolio manager's reference call, with everything before it in view."""
    score = decide.composite(reports)
    rating = decide.rating_of(score)
    decision = decide.decision_of(rating)
    last = data.prices.close[-1]
    size = final_size(trade, risk_debate)
    remembered, adjust = _memory_sentences(data.symbol, past)
    bulls = [r.analyst for r in reports if r.signal == "bullish"] or ["none"]
    bears = [r.analyst for r in reports if r.signal == "bearish"] or ["none"]
    # "Hold on AAPL, so HOLD" says one thing twice; "Overweight on AAPL, so BUY" says two.
    call = (
        f"{decision} on {data.symbol}"
        if rating.upper() == decision
        else f"{rating} on {data.symbol}, so {decision}"
    )
    rationale = " ".join(
        (
            f"{call}: the composite score of {score:+.2f} across "
            f"{_plural(len(reports), 'analyst')} sits in the {rating} band ({_band(rating)}).",
            f"Bullish analysts: {', '.join(bulls)}; bearish: {', '.join(bears)}.",
            _debate_sentence(debate, decision, score, rating),
            _position_sentence(trade, size, last),
            remembered,
        )
    )
    target = trade.target if trade is not None and trade.target is not None and decision != "HOLD" else last
    return Assessment(
        decision=decision,
        rating=rating,
        confidence=round(max(0.3, decide.confidence(score, reports, decision) + adjust), 2),
        horizon=HORIZON,
        rationale=rationale,
        key_risks=key_risks(data, reports),
        price_target=round(target, 2),
        horizon_days=HORIZON_DAYS,
        position_pct=size,
        memory=list(past),
    )
