"""The offline model: a deterministic writer that turns computed evidence into prose, no network."""

from __future__ import annotations

from typing import Any

import msgspec

from services.runner.pipeline import notes
from services.runner.pipeline.llm import ChatRequest, Completion, estimate_tokens


def _side(weight: float) -> str:
    return "supports" if weight > 0 else "weighs against" if weight < 0 else "is neutral for"


def _analyst(facts: dict[str, Any]) -> str:
    findings: list[list[Any]] = facts["findings"]
    # the lead is the strongest finding pointing the signal's way, never one against it
    sign = {"bullish": 1, "bearish": -1}.get(facts["signal"], 0)
    ranked = sorted(findings, key=lambda f: f[1] * sign if sign else abs(f[1]), reverse=True)
    name, signal = facts["name"], facts["signal"]
    lead = f"{signal.capitalize()} on {facts['symbol']} (score {facts['score']:+.2f})"
    if ranked and ranked[0][1]:
        lead += f", led by {ranked[0][0]}."
    else:  # nothing leans either way: say what was (not) found, so no two analysts open alike
        lead += f": {ranked[0][0]}." if ranked else f": the {name.lower()} found nothing to weigh."
    count = len(findings)
    lines = [lead, "", f"The {name.lower()} weighed {count} finding{'' if count == 1 else 's'}:"]
    lines += [
        f"- {text[0].upper()}{text[1:]}: {_side(weight)} the stock ({weight:+.2f})."
        for text, weight in findings
    ]
    pro, con = sum(1 for f in findings if f[1] > 0), sum(1 for f in findings if f[1] < 0)
    lines += [
        "",
        f"With {pro} for and {con} against, the {name.lower()} reads {facts['symbol']} as {signal}.",
    ]
    if facts.get("demo"):
        lines.append(f"The {name.lower()}'s numbers come from synthetic demo data, not real market data.")
    return "\n".join(lines)


def write(request: ChatRequest) -> str:
    """The answer to ``request``, from its facts alone."""
    facts = request.facts
    if request.json:
        return msgspec.json.encode(facts["reference"]).decode()
    if request.task.startswith("analyst:"):
        return _analyst(facts)
    if request.task == "debate:manager":
        return notes.manager(facts)
    if request.task.startswith("risk:"):
        return notes.risk_turn(facts)
    return notes.debate_turn(facts)


class OfflineModel:
    """Deterministic, free, offline; token counts are estimated from the text."""

    async def complete(self, request: ChatRequest) -> Completion:
        text = write(request)
        prompt = sum(estimate_tokens(m.content) for m in request.messages)
        return Completion(text=text, prompt_tokens=prompt, completion_tokens=estimate_tokens(text))
