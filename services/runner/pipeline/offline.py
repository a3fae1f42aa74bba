"""The offline model: a deterministic writer that turns computed evidence into prose, no network."""

from __future__ import annotations

from typing import Any

import msgspec

from services.runner.pipeline.llm import ChatRequest, Completion, estimate_tokens


def _side(weight: float) -> str:
    return "supports" if weight > 0 else "weighs against" if weight < 0 else "is neutral for"


def _analyst(facts: dict[str, Any]) -> str:
    findings: list[list[Any]] = facts["findings"]
    ranked = sorted(findings, key=lambda f: abs(f[1]), reverse=True)
    lead = f"{facts['signal'].capitalize()} on {facts['symbol']} (score {facts['score']:+.2f})"
    lead += f": {'; '.join(f[0] for f in ranked[:2])}." if ranked else "."
    lines = [lead, "", f"The {facts['name'].lower()} weighed {len(findings)} finding(s):"]
    lines += [f"- {text} — {_side(weight)} the stock ({weight:+.2f})." for text, weight in findings]
    pro, con = sum(1 for f in findings if f[1] > 0), sum(1 for f in findings if f[1] < 0)
    lines += ["", f"{pro} for, {con} against: on balance the view is {facts['signal']}."]
    if facts.get("demo"):
        lines.append("Note: computed from synthetic demo data, not real market data.")
    return "\n".join(lines)


def _debate(facts: dict[str, Any]) -> str:
    side, pts = facts["side"], facts["points"]
    case = (
        "; ".join(pts)
        if pts
        else "no analyst finding leans this way, so the case rests on the other side's weak spots"
    )
    text = f"Round {facts['round']}, {side}: {case}."
    if facts.get("rebut"):
        text += f" The {'bear' if side == 'bull' else 'bull'} side overlooks this evidence."
    return text


def _join(points: list[str]) -> str:
    return "; ".join(p.rstrip(".") for p in points) or "little"


def _manager(facts: dict[str, Any]) -> str:
    bull, bear = facts["bull"], facts["bear"]
    return (
        f"After {facts['rounds']} round(s) on {facts['symbol']}, the bull case rests on "
        f"{_join(bull[:2])}; the bear case on {_join(bear[:2])}. "
        f"The composite analyst score is {facts['score']:+.2f}, so the desk leans {facts['lean']}."
    )


def write(request: ChatRequest) -> str:
    """The answer to ``request``, from its facts alone."""
    facts = request.facts
    if request.json:
        return msgspec.json.encode(facts["reference"]).decode()
    if request.task.startswith("analyst:"):
        return _analyst(facts)
    if request.task == "debate:manager":
        return _manager(facts)
    return _debate(facts)


class OfflineModel:
    """Deterministic, free, offline; token counts are estimated from the text."""

    async def complete(self, request: ChatRequest) -> Completion:
        text = write(request)
        prompt = sum(estimate_tokens(m.content) for m in request.messages)
        return Completion(text=text, prompt_tokens=prompt, completion_tokens=estimate_tokens(text))
