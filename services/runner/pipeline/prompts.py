"""What each step asks of the model: messages for a real model, facts for the offline writer."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from services.runner.pipeline.evidence import Evidence
from services.runner.pipeline.llm import ChatRequest, Message
from shared.results import AnalystReport, Assessment, Debate, DebateTurn, TradeProposal

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


def points(reports: Sequence[AnalystReport], bullish: bool) -> list[str]:
    """The strongest views on one side (the risk analyst always counts for the bear)."""
    chosen = sorted(reports, key=lambda r: r.score, reverse=bullish)
    picked = [r for r in chosen if (r.score > 0 if bullish else r.score < 0 or r.analyst == "risk")]
    return [f"{r.analyst} analyst, {r.summary}" for r in picked[:3]]


def debate_turn(
    side: str, round_: int, symbol: str, reports: Sequence[AnalystReport], rebut: str, demo: bool
) -> ChatRequest:
    own = points(reports, bullish=side == "bull")
    user = (
        f"Round {round_}: argue the {side} case on {symbol} from these analyst findings: {_json(own)}. "
        + (f"Answer the other side's last argument: {rebut!r}. " if rebut else "")
        + "At most five sentences."
    )
    facts = {"side": side, "round": round_, "symbol": symbol, "points": own, "rebut": rebut}
    role = "the bull researcher" if side == "bull" else "the bear researcher"
    return ChatRequest(
        task=f"debate:{side}",
        messages=[_system(role, demo), Message("user", user)],
        facts=facts,
        max_tokens=400,
    )


def manager(
    symbol: str,
    turns: Sequence[DebateTurn],
    score: float,
    lean: str,
    reports: Sequence[AnalystReport],
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
        "bull": points(reports, bullish=True),
        "bear": points(reports, bullish=False),
    }
    return ChatRequest(
        task="debate:manager",
        messages=[_system("the research manager", demo), Message("user", user)],
        facts=facts,
        max_tokens=400,
    )


TRADE_SHAPE = (
    '{"action": "BUY|SELL|HOLD", "entry": number, "stop": number, "target": number|null, '
    '"position_pct": number 0-100, "rationale": string}'
)
ASSESSMENT_SHAPE = (
    '{"decision": "BUY|SELL|HOLD", "rating": "Buy|Overweight|Hold|Underweight|Sell", '
    '"confidence": number 0-1, '
    '"horizon": string, "rationale": string, "key_risks": [string, ...]}'
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


def final(
    symbol: str,
    reference: Assessment,
    reports: Sequence[AnalystReport],
    trade: TradeProposal | None,
    demo: bool,
) -> ChatRequest:
    summaries = {r.analyst: f"{r.signal} {r.score:+.2f}: {r.summary}" for r in reports}
    user = (
        f"Give the final assessment of {symbol}. Answer with only one JSON object shaped {ASSESSMENT_SHAPE}. "
        f"Analysts: {_json(summaries)}. Trader: {_json(trade) if trade else '(none)'}. "
        f"Quantitative reference from the evidence: {_json(reference)}."
    )
    return ChatRequest(
        task="final_assessment",
        messages=[_system("the portfolio manager", demo), Message("user", user)],
        facts={"reference": msgspec.to_builtins(reference)},
        max_tokens=600,
        json=True,
    )


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
