"""A run as Markdown: the note a person reads, in the order the desk worked.

The page's Export (services/gateway/static/export.js) writes the same layout: a title with the
decision, the facts as a list, the analysts' reports, the bull/bear debate, the trader's proposal,
the risk debate, the portfolio manager's decision with its key risks, then each step's status,
time and spend.
"""

from __future__ import annotations

import json
from typing import Any

from services.cli.api import Json, pick
from services.cli.present import step_usage, usage_line


def _fixed(value: Any, digits: int = 2) -> str:
    return f"{float(value):.{digits}f}" if isinstance(value, int | float) else "—"


def _utc(value: Any) -> str:
    text = str(value or "")
    return f"{text[:10]} {text[11:16]} UTC" if len(text) >= 16 and text[10] == "T" else text


def _section(title: str, *body: str) -> list[str]:
    return [f"## {title}", "", *body, ""]


def _facts(state: Json, url: str) -> list[str]:
    result = pick(state, "result") or {}
    facts = [f"- Run: [{pick(state, 'run_id')}]({url})", f"- Status: {pick(state, 'status')}"]
    if result:
        facts += [f"- Rating: {pick(result, 'rating')}"]
        if pick(result, "price_target") is not None:
            facts += [f"- Price target: {_fixed(pick(result, 'price_target'))}"]
        days = pick(result, "horizon_days")
        facts += [f"- Horizon: {pick(result, 'horizon')}" + (f" ({days} days)" if days else "")]
        facts += [f"- Confidence: {float(pick(result, 'confidence', 0.0) or 0.0):.0%}"]
        if pick(result, "position_pct") is not None:
            facts += [f"- Position: {_fixed(pick(result, 'position_pct'), 1)}% of portfolio"]
        if pick(result, "last_close") is not None:
            facts += [f"- Last close: {_fixed(pick(result, 'last_close'))}"]
    if pick(state, "demo") or pick(result, "demo"):
        facts += [f"- {pick(result, 'data_note') or 'Demo data: synthetic prices, not real market data.'}"]
    facts += [
        f"- Analysts: {', '.join(pick(state, 'analysts', []) or [])}",
        f"- Model: {pick(state, 'model_id')}",
        f"- Requested: {_utc(pick(state, 'created_at') or pick(state, 'requested_at'))}",
        f"- Usage: {usage_line(state)}",
    ]
    return facts


def _reports(result: Json) -> list[str]:
    lines = _section("Analyst reports")
    for report in pick(result, "reports", []) or []:
        title, signal = str(report.get("title") or report.get("analyst")), str(report.get("signal", ""))
        heading = title if signal.lower() in title.lower() else f"{title} ({signal})"
        lines += [f"### {heading}", "", str(report.get("report") or report.get("summary") or ""), ""]
    return lines


def _debate(debate: Json | None) -> list[str]:
    if not debate:
        return []
    turns = [
        f"**{'Bull' if t.get('side') == 'bull' else 'Bear'} (round {t.get('round')}):** {t.get('argument')}\n"
        for t in debate.get("turns", [])
    ]
    return _section(
        f"Bull vs bear debate (leans {debate.get('lean')})", str(debate.get("summary", "")), "", *turns
    )


def _trader(trade: Json | None) -> list[str]:
    if not trade:
        return []
    plan = (
        f"{trade.get('action')} at {_fixed(trade.get('entry'))}, stop {_fixed(trade.get('stop'))}, "
        f"target {_fixed(trade.get('target'))}, {_fixed(pick(trade, 'position_pct'), 1)}% of portfolio"
    )
    return _section("Trader's proposal", plan, "", str(trade.get("rationale", "")))


def _unlabelled(argument: str, stance: str) -> str:
    """An argument without a leading "Aggressive: " where the voice is already named before it."""
    return argument[len(stance) + 2 :] if argument.lower().startswith(f"{stance}: ") else argument


def _risk_debate(debate: Json | None) -> list[str]:
    if not debate:
        return []
    turns = [
        f"**{str(t.get('stance', '')).capitalize()} (round {t.get('round')}):** "
        f"{_unlabelled(str(t.get('argument', '')), str(t.get('stance', '')))}\n"
        for t in debate.get("turns", [])
    ]
    title = f"Risk debate ({debate.get('prevailing')} prevails)"
    return _section(title, str(debate.get("summary", "")), "", *turns)


def _manager(result: Json) -> list[str]:
    risks = pick(result, "key_risks", []) or []
    listed = ["", "Key risks:", "", *[f"- {risk}" for risk in risks]] if risks else []
    title = f"Portfolio manager: {pick(result, 'decision')} ({pick(result, 'rating')})"
    return _section(title, str(pick(result, "rationale", "")), *listed)


def _steps(state: Json) -> list[str]:
    lines = []
    for step in pick(state, "steps", []) or []:
        took, spent = pick(step, "duration_s"), step_usage(step)
        line = f"- {step.get('label') or step.get('name')}: {step.get('status')}"
        line += f" in {took:.1f} s" if isinstance(took, int | float) else ""
        lines.append(line + (f" ({spent})" if spent else ""))
    return _section("Steps", *lines)


def markdown(state: Json, url: str) -> str:
    """The run as Markdown (see the module's docstring for the layout)."""
    result = pick(state, "result") or {}
    lines = [f"# {pick(state, 'symbol')} — {pick(result, 'decision') or pick(state, 'status')}", ""]
    lines += [*_facts(state, url), ""]
    if result:
        lines += _reports(result) + _debate(pick(result, "debate")) + _trader(pick(result, "trade"))
        lines += _risk_debate(pick(result, "risk_debate")) + _manager(result)
    elif pick(state, "output") is not None:
        lines += _section("Output", "```json", json.dumps(pick(state, "output"), indent=2), "```")
    lines += _steps(state)
    text = "\n".join(lines)
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    return text.rstrip() + "\n"
