"""The offline writer's desk voices: debate turns, the research manager and the risk debate.

Each voice argues from its own side's points (findings that cite their numbers), answers the
other side's last point by weighing it against its own, and never repeats a sentence already
said in the step (``said``): a voice with nothing new says so in words that name the round.
"""

from __future__ import annotations

import re
from typing import Any

SENTENCE = re.compile(r"(?<=[.!?])\s+")
OTHER = {"bull": "bear", "bear": "bull"}


def sentences(text: str) -> list[str]:
    return [s.strip() for line in text.splitlines() for s in SENTENCE.split(line) if s.strip()]


def fresh(parts: list[str], said: list[str], fallback: str) -> str:
    """``parts`` without the sentences already said in this step (the fallback if none is left)."""
    seen = {s for text in said for s in sentences(text)}
    kept = [p for p in parts if p not in seen]
    return " ".join(kept) if kept else fallback


def _cite(point: list[Any]) -> str:
    analyst, text, weight = point
    return f"{text} (the {analyst} analyst, {weight:+.2f})"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


OPENERS = (
    "The {side} case on {symbol} starts with {point}.",
    "Next on the {side} side: {point}.",
    "The {side} side adds {point}.",
    "One more for the {side}: {point}.",
    "The {side} side's last new point is {point}.",
)


def debate_turn(facts: dict[str, Any]) -> str:
    side, round_, points = facts["side"], facts["round"], facts["points"]
    parts: list[str] = []
    answer, own = facts.get("answer"), facts.get("strongest")
    if answer and own and own in points:
        points = [p for p in points if p != own]  # cited in the answer: not listed again
    if answer and own:
        if abs(own[2]) >= abs(answer[2]):
            parts.append(
                f"The {OTHER[side]} leans on {_cite(answer)}, but that weighs less than {_cite(own)}."
            )
        else:
            parts.append(
                f"The {OTHER[side]} is right to cite {_cite(answer)}; {_cite(own)} only partly offsets it."
            )
    opener = OPENERS[min(round_ - 1, len(OPENERS) - 1)]
    for index, point in enumerate(points):
        text = opener if index == 0 else "It is backed by {point}."
        parts.append(text.format(side=side, symbol=facts["symbol"], point=_cite(point)))
    if not points and not facts.get("any"):
        parts.append(f"No analyst finding points {side}ish; the {side} case is only the other side's gaps.")
    fallback = f"In round {round_} the {side} side has nothing new and rests on what it has said."
    return fresh(parts, facts.get("said", []), fallback)


def manager(facts: dict[str, Any]) -> str:
    bull, bear = facts["bull"], facts["bear"]
    bull_sum, bear_sum = sum(p[2] for p in bull), sum(p[2] for p in bear)
    rounds = facts["rounds"]
    held = f"Over {_plural(rounds, 'round')}" if rounds else "Without a debate round"
    parts = [
        f"{held}, the bull findings add up to {bull_sum:+.2f} from {_plural(len(bull), 'point')} "
        f"and the bear findings to {bear_sum:+.2f} from {_plural(len(bear), 'point')}.",
    ]
    if bull and bear:
        parts.append(f"Strongest for: {_cite(bull[0])}; strongest against: {_cite(bear[0])}.")
    parts.append(
        f"With a composite analyst score of {facts['score']:+.2f}, "
        f"the research manager leans {facts['lean']}."
    )
    return " ".join(parts)


def _claims(facts: dict[str, Any]) -> dict[str, list[str]]:
    """What each voice may lead with, rotated by round so each round brings a new number."""
    r = facts["risk"]
    templates = (
        ("annualised_volatility", "an annualised volatility of {:.1f}%", 100),
        ("max_drawdown", "a worst drawdown of {:.1f}% over the year", 100),
        ("var95_1d", "a one-day 95% VaR of {:.1f}%", 100),
        ("beta", "a beta of {:.2f}", 1),
    )
    # a measure too short a series could not give is left out, never written as "n/a"
    measured = [text.format(r[key] * scale) for key, text, scale in templates if r.get(key) is not None]
    fallback = ["the size of the stop against the entry"]
    return {
        "aggressive": [_cite(p) for p in facts["bull"]] or ["the trader's own reward-to-risk"],
        "conservative": measured + [_cite(p) for p in facts["bear"]] or fallback,
        "neutral": measured[::-1] or fallback,
    }


def _lead(stance: str, claim: str, facts: dict[str, Any]) -> str:
    size, base, action = facts["size"], facts["trader_size"], facts["action"]
    if stance == "aggressive":
        if action == "HOLD":
            return f"Aggressive: {claim} is reason enough for a {size:.1f}% starter position instead of none."
        return f"Aggressive: {claim} backs the {action}; take {size:.1f}% over the trader's {base:.1f}%."
    if stance == "conservative":
        if action == "HOLD":
            return f"Conservative: {claim} is why flat is right until the evidence picks a side."
        return f"Conservative: {claim} argues for half the size, {size:.1f}% instead of {base:.1f}%."
    if action == "HOLD":
        return f"Neutral: {claim} is no reason to act either way; stay flat and look again."
    return f"Neutral: weighing {claim}, the trader's {base:.1f}% is the balanced size."


def _answer(stance: str, answer: dict[str, Any], facts: dict[str, Any]) -> str:
    them, claim = answer["stance"], answer["claim"]
    loss = facts["size"] * facts["stop_distance"] / 100
    if stance == "aggressive":
        return (
            f"To the {them} voice on {claim}: the stop {facts['stop_distance']:.1f}% away "
            f"caps the loss at about {loss:.2f}% of the portfolio."
        )
    if stance == "conservative":
        var = facts["risk"].get("var95_1d")
        days = f"{facts['stop_distance'] / (var * 100):.1f}" if var else "a few"
        return (
            f"To the {them} voice on {claim}: the stop is {facts['stop_distance']:.1f}% away, "
            f"only {days} bad days at the one-day VaR, and a gap can jump it."
        )
    return f"The {them} voice is right about {claim}, but it is one number among several."


def risk_turn(facts: dict[str, Any]) -> str:
    stance, round_ = facts["stance"], facts["round"]
    options = _claims(facts)[stance]
    claim = options[(round_ - 1) % len(options)]
    parts = [_answer(stance, facts["answer"], facts)] if facts.get("answer") else []
    parts.append(_lead(stance, claim, facts))
    fallback = f"In round {round_} the {stance} voice has nothing new: {facts['size']:.1f}% stands."
    return fresh(parts, facts.get("said", []), fallback)


def claim_of(facts: dict[str, Any]) -> str:
    """The number a risk voice led with (what the next voice answers)."""
    options = _claims(facts)[facts["stance"]]
    claim: str = options[(facts["round"] - 1) % len(options)]
    return claim
