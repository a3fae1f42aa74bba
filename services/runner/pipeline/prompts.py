"""What each step asks of the model: messages for a real model, facts for the offline writer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from services.runner.pipeline import notes
from services.runner.pipeline.desk import Point, round_points
from services.runner.pipeline.evidence import Evidence
from services.runner.pipeline.llm import ChatRequest, Message
from shared.results import (
    AnalystReport,
    Assessment,
    Debate,
    DebateTurn,
    PastCall,
    RiskDebate,
    RiskTurn,
    TradeProposal,
)

RULES = (
    "Use only the numbers given to you and cite them; do not invent data. "
    "Be concise and concrete. Plain text, no markdown headings."
)
DEMO_NOTE = "The data is synthetic demo data, not real market data; say so once."


def _system(role: str, demo: bool) -> Message:
    return Message(
        "system", f"You are {role} on an equity research desk. {RULES}" + (f" {DEMO_NOTE}" if demo else "")
    )


def _json(value: object) -> str:
    return msgspec.json.encode(value).decode()


def analyst(name: str, symbol: str, evidence: Evidence, demo: bool) -> ChatRequest:
    findings = [[f.text, f.weight] for f in evidence.findings]
    user = (
        f"Write the {name.lower()}'s report on {symbol}. First line: a one-sentence summary. "
        f"Then the reasoning, citing the numbers. Computed signal: {evidence.signal} "
        f"(score {evidence.score:+.2f}, -1 bearish … +1 bullish).\n"
        f"Numbers: {_json(evidence.numbers)}\nFindings (text, weight): {_json(findings)}"
    )
    facts = {
        "name": name,
        "symbol": symbol,
        "demo": demo,
        "findings": findings,
        "score": evidence.score,
        "signal": evidence.signal,
    }
    return ChatRequest(
        task=f"analyst:{evidence.analyst}",
        messages=[_system(f"the {name.lower()}", demo), Message("user", user)],
        facts=facts,
        max_tokens=600,
    )


def debate_turn(
    side: str,
    round_: int,
    symbol: str,
    sides: tuple[list[Point], list[Point]],
    turns: Sequence[DebateTurn],
    demo: bool,
) -> ChatRequest:
    """One researcher's turn: its side's new points this round, answering the other's last one."""
    own_all, theirs_all = sides if side == "bull" else sides[::-1]
    own = round_points(own_all, round_)
    rebut = turns[-1].argument if turns else ""
    answer = _last_point(theirs_all, round_ if side == "bull" else round_ + 1)
    user = (
        f"Round {round_}: argue the {side} case on {symbol}. Your side's findings (analyst, finding "
        f"citing its numbers, weight): {_json(own or own_all[:2])}. Cite the numbers by name. "
        + (f"First answer the other side's last argument point by point: {rebut!r}. " if rebut else "")
        + "Do not repeat earlier sentences. At most five sentences."
    )
    facts = {
        "side": side,
        "round": round_,
        "symbol": symbol,
        "points": own,
        "any": bool(own_all),
        "answer": answer if rebut else None,
        "strongest": own_all[0] if own_all else None,
        "said": [t.argument for t in turns],
    }
    role = "the bull researcher" if side == "bull" else "the bear researcher"
    return ChatRequest(
        task=f"debate:{side}",
        messages=[_system(role, demo), Message("user", user)],
        facts=facts,
        max_tokens=400,
    )


def _last_point(points: list[Point], round_: int) -> Point | None:
    """The newest point the other side has made before this turn (its last round's last one)."""
    made = points[: max(0, (round_ - 1) * 2)]
    return made[-1] if made else (points[0] if points else None)


def manager(
    symbol: str,
    turns: Sequence[DebateTurn],
    score: float,
    lean: str,
    sides: tuple[list[Point], list[Point]],
    demo: bool,
) -> ChatRequest:
    transcript = "\n".join(f"[{t.side} r{t.round}] {t.argument}" for t in turns)
    user = (
        f"Summarise the bull/bear debate on {symbol} in at most five sentences "
        "and say which side the evidence favours. "
        f"Composite analyst score {score:+.2f} (lean {lean}).\nDebate:\n{transcript or '(no rounds)'}"
    )
    facts = {
        "symbol": symbol,
        "score": score,
        "lean": lean,
        "rounds": max((t.round for t in turns), default=0),
        "bull": sides[0],
        "bear": sides[1],
    }
    return ChatRequest(
        task="debate:manager",
        messages=[_system("the research manager", demo), Message("user", user)],
        facts=facts,
        max_tokens=400,
    )


STANCE_BRIEF = {
    "aggressive": "argue for taking more risk where the upside evidence supports it",
    "conservative": "argue for protecting the portfolio: smaller size, the measured downside first",
    "neutral": "weigh both and argue for the balanced size",
}


def risk_turn(context: RiskContext, stance: str, round_: int, turns: Sequence[RiskTurn]) -> ChatRequest:
    """One risk voice's turn over the trader's proposal, answering the previous voice."""
    trade, last = context.trade, turns[-1] if turns else None
    facts: dict[str, Any] = {
        "stance": stance,
        "round": round_,
        "symbol": context.symbol,
        "action": trade.action,
        "size": context.sizes[stance],
        "trader_size": trade.position_pct,
        "stop_distance": abs(trade.entry - trade.stop) / trade.entry * 100 if trade.entry else 0.0,
        "risk": context.risk,
        "bull": context.sides[0],
        "bear": context.sides[1],
        "said": [t.argument for t in turns],
    }
    if last is not None:
        prior = {**facts, "stance": last.stance, "round": last.round}
        facts["answer"] = {"stance": last.stance, "claim": notes.claim_of(prior)}
    user = (
        f"Round {round_} of the risk debate on {context.symbol}: {STANCE_BRIEF[stance]}. "
        f"Trader's proposal: {_json(trade)}. Measured risk: {_json(context.risk)}. "
        f"Research manager: {context.summary}. Argue for a position of {facts['size']:.1f}% of the "
        "portfolio, citing the numbers by name. "
        + (f"First answer the {last.stance} voice: {last.argument!r}. " if last else "")
        + "Do not repeat earlier sentences. At most four sentences."
    )
    return ChatRequest(
        task=f"risk:{stance}",
        messages=[_system(f"the {stance} risk analyst", context.demo), Message("user", user)],
        facts=facts,
        max_tokens=350,
    )


class RiskContext(msgspec.Struct, frozen=True, kw_only=True):
    """What every risk voice sees: the proposal, the measured risk, the sides' points."""

    symbol: str
    trade: TradeProposal
    risk: dict[str, float]
    sides: tuple[list[Point], list[Point]]
    sizes: dict[str, float]
    summary: str
    demo: bool


TRADE_SHAPE = (
    '{"action": "BUY|SELL|HOLD", "entry": number, "stop": number, "target": number|null, '
    '"position_pct": number 0-100, "rationale": string}'
)
ASSESSMENT_SHAPE = (
    '{"decision": "BUY|SELL|HOLD", "rating": "Buy|Overweight|Hold|Underweight|Sell", '
    '"confidence": number 0-1, '
    '"horizon": string, "rationale": string, "key_risks": [string, ...], '
    '"price_target": number, "horizon_days": integer, "position_pct": number 0-100}'
)


def trader(symbol: str, reference: TradeProposal, debate: Debate | None, demo: bool) -> ChatRequest:
    user = (
        f"Propose a trade on {symbol}. Answer with only one JSON object shaped {TRADE_SHAPE}. "
        f"Quantitative reference from the evidence: {_json(reference)}. "
        f"Research manager: {debate.summary if debate else '(no debate)'}"
    )
    return ChatRequest(
        task="trader",
        messages=[_system("the trader", demo), Message("user", user)],
        facts={"reference": msgspec.to_builtins(reference)},
        max_tokens=500,
        json=True,
    )


def final(symbol: str, reference: Assessment, view: DeskView, demo: bool) -> ChatRequest:
    """The portfolio manager: decides with the reports, both debates and the proposal in view."""
    summaries = {r.analyst: f"{r.signal} {r.score:+.2f}: {r.summary}" for r in view.reports}
    debate = f"{view.debate.summary} (lean {view.debate.lean})" if view.debate else "(none)"
    risk = "\n".join(f"[{t.stance} r{t.round}] {t.argument}" for t in view.risk.turns) if view.risk else ""
    user = (
        f"Give the final assessment of {symbol} as the portfolio manager. Answer with only one JSON "
        f"object shaped {ASSESSMENT_SHAPE}. If your decision differs from the research debate's "
        "lean, say why in the rationale. "
        f"Analysts: {_json(summaries)}. Research debate: {debate}. "
        f"Trader: {_json(view.trade) if view.trade else '(none)'}. "
        f"Risk debate: {risk or '(none)'} Risk verdict: {view.risk.summary if view.risk else '(none)'}. "
        f"Your earlier calls on {symbol} and their outcomes: {_json(view.past) if view.past else '(none)'}; "
        "say in the rationale how they changed your view. "
        f"Quantitative reference from the evidence: {_json(reference)}."
    )
    return ChatRequest(
        task="final_assessment",
        messages=[_system("the portfolio manager", demo), Message("user", user)],
        facts={"reference": msgspec.to_builtins(reference)},
        max_tokens=700,
        json=True,
    )


class DeskView(msgspec.Struct, frozen=True, kw_only=True):
    """Everything before the portfolio manager."""

    reports: list[AnalystReport]
    debate: Debate | None
    trade: TradeProposal | None
    risk: RiskDebate | None
    past: list[PastCall] = []


def check_trade(proposal: TradeProposal) -> str | None:
    if proposal.entry <= 0 or proposal.stop <= 0:
        return "entry and stop must be positive"
    if not 0 <= proposal.position_pct <= 100:
        return "position_pct must be between 0 and 100"
    return None


def check_assessment(assessment: Assessment) -> str | None:
    if not 0 <= assessment.confidence <= 1:
        return "confidence must be between 0 and 1"
    return None
