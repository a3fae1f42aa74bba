"""How a run looks in a terminal: a live progress bar on a TTY, one line per event otherwise."""

from __future__ import annotations

import json
import shutil
import sys
import textwrap
from collections.abc import Mapping
from typing import IO, Any

from services.cli.api import pick

Json = Mapping[str, Any]
TERMINAL = frozenset({"completed", "failed", "timeout", "cancelled"})
MARKS = {"completed": "✓", "failed": "✗", "cancelled": "-", "running": "…", "pending": " "}


def is_terminal(state: Json) -> bool:
    return str(pick(state, "status", "")) in TERMINAL


def percent(state: Json) -> float:
    return float(pick(state, "progress", 0.0) or 0.0)


def eta_text(state: Json) -> str:
    eta = pick(state, "eta_s")
    if is_terminal(state) or eta is None:
        return ""
    seconds = max(round(float(eta)), 0)
    return f"ETA {seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"ETA {seconds}s"


def bar(fraction: float, width: int) -> str:
    filled = round(max(min(fraction, 1.0), 0.0) * width)
    return "█" * filled + "░" * (width - filled)


def current_label(state: Json) -> str:
    current = pick(state, "current_step")
    for step in pick(state, "steps", []) or []:
        if step.get("name") == current:
            message = step.get("message") or ""
            return f"{step.get('label', current)}: {message}" if message else str(step.get("label", current))
    return str(pick(state, "message", "") or pick(state, "status", ""))


def duration(value: Any) -> str:
    return f"{float(value):.1f}s" if isinstance(value, int | float) else ""


class Display:
    """Renders state snapshots as they arrive. ``live`` redraws a bar; otherwise prints lines."""

    def __init__(self, out: IO[str] | None = None, *, live: bool | None = None) -> None:
        self.out = out or sys.stdout
        self.live = self.out.isatty() if live is None else live
        self.shown_steps: set[str] = set()
        self.bar_drawn = False

    def snapshot(self, state: Json, header: bool = True) -> None:
        """The run as it is now (on attach): its header and the steps already finished."""
        if header:
            self._line(
                f"run {pick(state, 'run_id')} · {pick(state, 'symbol')} · "
                f"{', '.join(pick(state, 'analysts', []) or [])} · {pick(state, 'status')}"
            )
        self._finished_steps(state)
        self._redraw(state)

    def event(self, event_id: str | None, kind: str, state: Json) -> None:
        """One event arrived; ``state`` is the run after it."""
        if not self.live:
            step = self._event_step(state, kind)
            line = f"{event_id}\t{kind}\t{step}\t{percent(state):.1f}%\t{pick(state, 'status')}"
            spent = _step_usage(state, step) if kind == "StepCompleted" else ""
            self._line(line + (f"\t{spent}" if spent else ""))
            return
        self._finished_steps(state)
        self._redraw(state)

    def note(self, text: str) -> None:
        self._clear_bar()
        self.out.write(f"{text}\n")
        self.out.flush()

    def _event_step(self, state: Json, kind: str) -> str:
        if kind.startswith("Step"):
            return str(pick(state, "current_step") or "")
        return ""

    def _finished_steps(self, state: Json) -> None:
        if not self.live:
            return
        for step in pick(state, "steps", []) or []:
            name, status = step.get("name"), step.get("status")
            if status in ("completed", "failed", "cancelled") and name not in self.shown_steps:
                self.shown_steps.add(name)
                mark, spent = MARKS.get(status, " "), _step_usage(state, str(name))
                took = duration(pick(step, "duration_s"))
                self._line(f"  {mark} {step.get('label', name):<24} {took:>7}  {spent}".rstrip())

    def _redraw(self, state: Json) -> None:
        if not self.live:
            return
        width = shutil.get_terminal_size((100, 20)).columns
        steps = pick(state, "steps", []) or []
        done = sum(1 for step in steps if step.get("status") == "completed")
        text = f"[{bar(percent(state) / 100.0, 30)}] {percent(state):5.1f}% step {done}/{len(steps)} "
        text += f"{eta_text(state):>10}  "
        text += current_label(state)
        self.out.write("\r\x1b[K" + text[: width - 1])
        self.out.flush()
        self.bar_drawn = True

    def _clear_bar(self) -> None:
        if self.bar_drawn:
            self.out.write("\r\x1b[K")
            self.bar_drawn = False

    def _line(self, text: str) -> None:
        self._clear_bar()
        self.out.write(text + "\n")
        self.out.flush()


def _step_usage(state: Json, name: str) -> str:
    from services.cli.present import step_usage  # present imports this module's neighbours

    step = next((s for s in pick(state, "steps", []) or [] if s.get("name") == name), None)
    return step_usage(step) if step else ""


def render_result(state: Json) -> str:
    """The outcome of a finished run as readable text."""
    status = pick(state, "status")
    lines = [f"Run {pick(state, 'run_id')} ({pick(state, 'symbol')}): {status}"]
    error = pick(state, "error")
    if status != "completed" and error:
        lines.append(f"  {error.get('code')}: {error.get('message')}")
    result = pick(state, "result")
    if status == "completed" and result:
        lines.extend(_result_lines(result))
    elif status == "completed" and pick(state, "output") is not None:  # a pipeline other than the built-in
        lines.append(textwrap.indent(json.dumps(pick(state, "output"), indent=2, ensure_ascii=False), "  "))
    if pick(state, "duration_s") is not None:
        lines.append(f"  took {duration(pick(state, 'duration_s'))}")
    return "\n".join(lines)


def _result_lines(result: Json) -> list[str]:
    confidence = float(pick(result, "confidence", 0.0) or 0.0)
    lines = [
        f"  Decision: {pick(result, 'decision')} ({pick(result, 'rating')}), "
        f"confidence {confidence:.0%}, horizon {pick(result, 'horizon')}",
    ]
    if pick(result, "demo"):
        note = pick(result, "data_note") or "not real market prices"
        lines.append(f"  Data: {pick(result, 'provider')} (DEMO DATA) {note}")
    if pick(result, "price_target") is not None:
        lines.append(
            f"  Price target: {pick(result, 'price_target')} within {pick(result, 'horizon_days')} days, "
            f"position {pick(result, 'position_pct')}% of the portfolio"
        )
    lines.extend(_wrapped("Rationale", str(pick(result, "rationale", ""))))
    for risk in pick(result, "key_risks", []) or []:
        lines.extend(_wrapped("Risk", str(risk)))
    trade = pick(result, "trade")
    if trade:
        lines.append(
            f"  Trade: {trade.get('action')} at {trade.get('entry')}, stop {trade.get('stop')}, "
            f"target {trade.get('target')}, position {pick(trade, 'position_pct')}%"
        )
    debate, risk = pick(result, "debate"), pick(result, "risk_debate")
    if debate:
        lines.extend(_wrapped(f"Debate (leans {debate.get('lean')})", str(debate.get("summary", ""))))
    if risk:
        lines.extend(
            _wrapped(f"Risk debate ({risk.get('prevailing')} prevails)", str(risk.get("summary", "")))
        )
    for call in pick(result, "memory", []) or []:
        lines.append(f"  Earlier: {_past(call)}")
    for report in pick(result, "reports", []) or []:
        lines.append(f"  [{report.get('signal', '?'):>7}] {report.get('title')}: {report.get('summary')}")
    return lines


def _past(call: Json) -> str:
    """An earlier call on the symbol and its outcome, ✓/✗ and the return."""
    realised = pick(call, "realised_return")
    head = f"{call.get('decision')} on {call.get('date')} at {call.get('price')}"
    if realised is None:
        return f"{head}: no later close yet"
    mark = "✓" if call.get("hit") else "✗"
    demo = " (demo data)" if call.get("demo") else ""
    return f"{head}: {float(realised) * 100:+.1f}% {mark}{demo}"


def _wrapped(label: str, text: str) -> list[str]:
    return textwrap.wrap(text, 100, initial_indent=f"  {label}: ", subsequent_indent="    ") or []


def render_runs(runs: list[Json], *, iso: bool = False) -> str:
    """A table of runs, newest first, as the API returned them; times as "2 min ago" unless ``iso``.

    OUTCOME is the realised return since the decision, ✓/✗ for whether it went the call's way;
    DATA says "demo" for a run on synthetic prices (its outcome is measured on them too).
    """
    from services.cli.present import ago, dollars  # present imports this module's neighbours

    rows = [
        f"{'RUN ID':<36} {'SYMBOL':<8} {'STATUS':<10} {'DECISION':<8} {'OUTCOME':<9} {'DATA':<5}"
        f" {'PROGRESS':>8} {'COST':>8}  REQUESTED"
    ]
    for run in runs:
        result = pick(run, "result") or {}
        created = pick(run, "created_at") or pick(run, "requested_at", "")
        cost = dollars(pick(pick(run, "usage") or {}, "cost_usd", 0.0))
        when = created if iso else ago(created)
        rows.append(
            f"{pick(run, 'run_id', ''):<36} {pick(run, 'symbol', ''):<8} {pick(run, 'status', ''):<10} "
            f"{pick(result, 'decision', '') or '':<8} {outcome_text(pick(run, 'outcome')):<9} "
            f"{'demo' if is_demo(run) else '':<5} {percent(run):>7.1f}% {cost:>8}  {when}"
        )
    return "\n".join(rows)


def outcome_text(outcome: Json | None) -> str:
    """ "✓ +3.2%" / "✗ -1.0%" (no mark while nothing says whether it was right); "" with none."""
    if not outcome or pick(outcome, "realised_return") is None:
        return ""
    correct = pick(outcome, "correct")
    mark = "✓" if correct else "✗" if correct is False else "·"
    return f"{mark} {float(pick(outcome, 'realised_return')) * 100:+.1f}%"


def is_demo(run: Json) -> bool:
    """Whether the run used demo (synthetic) data, by the run's flag or its result's."""
    flag = pick(run, "demo")
    return bool(flag if flag is not None else pick(pick(run, "result") or {}, "demo", False))


def render_models(models: list[Json]) -> str:
    """The model registry as the gateway reports it; an unavailable model says why."""
    rows = []
    for model in models:
        mark = "  " if pick(model, "available", True) else "✗ "
        why = "" if pick(model, "available", True) else f"  (unavailable: {pick(model, 'reason')})"
        default = " [default]" if pick(model, "default") else ""
        rows.append(f"{mark}{pick(model, 'id', '')}: {pick(model, 'label', '')}{default}{why}")
    return "\n".join(rows)
