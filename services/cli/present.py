"""What the client commands say: run-id prefixes, human times, usage, a run's link and export."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from services.cli.api import Api, ApiError, pick

Json = Mapping[str, Any]
FULL_ID_MIN = 32
"""A run id this long is taken as whole: asked for directly, never matched against the list."""
SEARCH_PAGES = 10
"""How many pages of 100 runs a prefix is looked up in before giving up."""


class NotFound(ApiError):
    """No run matches; the message says what was looked for."""


class Ambiguous(ApiError):
    """More than one run matches a prefix; the message lists them."""


def resolve(api: Api, wanted: str) -> str:
    """The one run id ``wanted`` starts (or, as the page's 6-character tag, ends) — or raises."""
    wanted = wanted.strip()
    if len(wanted) >= FULL_ID_MIN:
        return wanted
    try:
        return str(pick(api.run(wanted), "run_id", wanted))  # a whole id of another shape
    except ApiError as exc:
        if exc.status not in (404, 422):
            raise
    if len(wanted) < 4:
        raise ApiError(
            f"run id {wanted!r} is too short: give at least 4 characters", status=422, field="run_id"
        )
    matches: list[str] = []
    cursor: str | None = None
    for _ in range(SEARCH_PAGES):
        page = api.runs(limit=100, cursor=cursor)
        for run in page.get("runs") or page.get("items") or []:
            run_id = str(pick(run, "run_id", ""))
            if (run_id.startswith(wanted) or run_id.endswith(wanted)) and run_id not in matches:
                matches.append(run_id)
        cursor = pick(page, "next_cursor")
        if not cursor:
            break
    if not matches:
        raise NotFound(f"no run of yours has an id starting or ending with {wanted!r}", status=404)
    if len(matches) > 1:
        raise Ambiguous(
            f"{wanted!r} matches {len(matches)} runs: {', '.join(matches[:5])}; give more characters", 409
        )
    return matches[0]


def ago(value: Any, now: datetime | None = None) -> str:
    """ "2 min ago" for an ISO time; the text unchanged when it is not one."""
    try:
        then = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return str(value or "")
    if then.tzinfo is None:
        then = then.replace(tzinfo=UTC)
    seconds = int(((now or datetime.now(UTC)) - then).total_seconds())
    if seconds < 0:
        return "just now"
    for size, unit in ((86400, "day"), (3600, "h"), (60, "min")):
        if seconds >= size:
            count = seconds // size
            return f"{count} {unit}{'s' if unit == 'day' and count > 1 else ''} ago"
    return "just now" if seconds < 10 else f"{seconds} s ago"


def dollars(value: Any) -> str:
    amount = float(value or 0.0)
    return f"${amount:.4f}" if 0 < amount < 1 else f"${amount:.2f}"


def step_usage(step: Json) -> str:
    """ "2 calls · 1,234 tokens · $0.0012" for a step that called a model; "" for one that did not."""
    usage = pick(step, "usage") or {}
    calls = int(pick(usage, "calls", 0) or 0)
    if not calls:
        return ""
    tokens = int(pick(usage, "prompt_tokens", 0) or 0) + int(pick(usage, "completion_tokens", 0) or 0)
    cost = dollars(pick(usage, "cost_usd", 0.0))
    return f"{calls} call{'' if calls == 1 else 's'} · {tokens:,} tokens · {cost}"


def usage_line(state: Json) -> str:
    """ "3 LLM calls · 1,234 tokens · $0.0123 of $0.50 budget" (the budget when one was set)."""
    usage = pick(state, "usage") or {}
    tokens = int(pick(usage, "prompt_tokens", 0) or 0) + int(pick(usage, "completion_tokens", 0) or 0)
    calls = int(pick(usage, "calls", 0) or 0)
    options = pick(state, "options") or {}
    budget = pick(options, "max_cost_usd")
    cap = pick(options, "max_tokens")
    spend = dollars(pick(usage, "cost_usd", 0.0)) + (f" of {dollars(budget)} budget" if budget else "")
    token_text = f"{tokens:,} tokens" + (f" of {int(cap):,}" if cap else "")
    return f"{calls} LLM call{'' if calls == 1 else 's'} · {token_text} · {spend}"


def run_url(api_url: str, run_id: str) -> str:
    """The page's address of one run (opens it, live while it runs)."""
    return f"{api_url.rstrip('/')}/#/runs/{run_id}"


def self_command() -> str:
    """How the person ran this command, so hints can be pasted as they are."""
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] else "tickertape"
    if argv0.endswith("__main__.py") or argv0 == "-m":
        return "python -m services.cli"
    name = os.path.basename(argv0)
    found = shutil.which(name)
    if found and os.path.realpath(found) == os.path.realpath(argv0):
        return name
    return (
        os.path.relpath(argv0) if os.path.isabs(argv0) and len(os.path.relpath(argv0)) < len(argv0) else argv0
    )
