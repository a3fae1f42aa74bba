"""`tickertape fork` and `tickertape diff`: re-run from a step with changed options, and compare."""

from __future__ import annotations

import argparse
import json
from typing import Any

from services.cli.api import Api, pick
from services.cli.commands import EXIT_OK, Json
from services.cli.commands import _client as client
from services.cli.commands import _follow_sse as follow_sse
from services.cli.present import resolve, run_url, self_command
from services.cli.settings import ClientSettings

CHANGED, SAME = "≠", " "
"""The mark in front of a row of `diff`'s table."""
VALUE_WIDTH = 28


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``fork`` and ``diff`` to the parser."""
    fork = sub.add_parser("fork", help="re-run a run from one of its steps, with changed options")
    fork.add_argument("run_id", help="the source run (an id, or a unique start or 6-character end)")
    fork.add_argument("--from-step", required=True, help="the first step to recompute, e.g. trader")
    fork.add_argument("--model", default=None, help="another model id")
    fork.add_argument("--analysts", default=None, help="comma-separated analyst ids")
    fork.add_argument("--debate-rounds", type=int, default=None)
    fork.add_argument("--risk-rounds", type=int, default=None, help="risk debate rounds, 1-5")
    fork.add_argument("--budget", type=float, default=None, help="stop past this many USD of LLM calls")
    fork.add_argument("--follow", "-f", action="store_true", help="show live progress until it ends")
    fork.set_defaults(func=client(cmd_fork))
    diff = sub.add_parser("diff", help="what differs between two of your runs, side by side")
    diff.add_argument("run_a")
    diff.add_argument("run_b")
    diff.add_argument("--format", choices=("text", "json"), default="text")
    diff.set_defaults(func=client(cmd_diff))


def fork_body(ns: argparse.Namespace) -> Json:
    """The fork request: the step, and only the options the command line changes."""
    body: Json = {"fromStep": ns.from_step}
    if ns.model:
        body["modelId"] = ns.model
    if ns.analysts:
        body["analysts"] = [a.strip() for a in ns.analysts.split(",") if a.strip()]
    for name, value in (
        ("debateRounds", ns.debate_rounds),
        ("riskRounds", ns.risk_rounds),
        ("maxCostUsd", ns.budget),
    ):
        if value is not None:
            body[name] = value
    return body


def cmd_fork(ns: argparse.Namespace, settings: ClientSettings) -> int:
    with Api(settings) as api:
        source = resolve(api, ns.run_id)
        answer = api.fork(source, fork_body(ns))
        run_id = str(pick(answer, "run_id"))
        reused = pick(answer, "reused_steps", []) or []
        print(f"forked run {source} from {ns.from_step}: run {run_id} ({pick(answer, 'status')})")
        print(f"reused: {', '.join(reused) if reused else 'nothing (every step is recomputed)'}")
        print(f"open: {run_url(settings.api_url, run_id)}")
        if not ns.follow:
            print(f"follow it with: {self_command()} watch {run_id}")
            print(f"compare: {self_command()} diff {source} {run_id}")
            return EXIT_OK
        return follow_sse(api, settings, run_id)


def cmd_diff(ns: argparse.Namespace, settings: ClientSettings) -> int:
    with Api(settings) as api:
        found = api.diff(resolve(api, ns.run_a), resolve(api, ns.run_b))
    print(json.dumps(found, indent=2) if ns.format == "json" else render_diff(found))
    return EXIT_OK


def render_diff(found: Json) -> str:
    """Two columns, one row per differing key (marked ≠), then the keys that are the same."""
    changed: dict[str, Any] = found.get("changed") or {}
    rows = [(key, part["a"], part["b"]) for key, part in _expanded(changed)]
    width = max([len(key) for key, _, _ in rows] + [1])
    lines = [f"A  {found.get('a')}", f"B  {found.get('b')}", "", _row(SAME, width, "", "A", "B")]
    lines += [_row(CHANGED, width, *row) for row in rows] or ["  (no differences)"]
    same = found.get("same") or []
    if same:
        lines.append(f"  same: {', '.join(same)}")
    return "\n".join(lines)


def _expanded(changed: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Rows, with a differing table (``options``) split into its differing members."""
    rows: list[tuple[str, dict[str, Any]]] = []
    for key, part in changed.items():
        a, b = part.get("a"), part.get("b")
        if isinstance(a, dict) and isinstance(b, dict):
            inner = {k: {"a": a.get(k), "b": b.get(k)} for k in sorted({*a, *b}) if a.get(k) != b.get(k)}
            rows += [(f"{key}.{k}", v) for k, v in inner.items()]
        else:
            rows.append((key, {"a": a, "b": b}))
    return rows


def _row(mark: str, width: int, key: str, a: Any, b: Any) -> str:
    return f"{mark} {key:<{width}}  {_cell(a):<{VALUE_WIDTH}}  {_cell(b)}".rstrip()


def _cell(value: Any) -> str:
    if value is None:
        text = "—"
    elif isinstance(value, float):
        text = f"{value:.4g}"
    elif isinstance(value, list):
        text = ",".join(str(v) for v in value)
    else:
        text = str(value)
    return text if len(text) <= VALUE_WIDTH else text[: VALUE_WIDTH - 1] + "…"
