"""`tickertape runs` / `show` on real stacks: cost per step and run, outcomes (✓/✗, the return),
demo labels, and the archive (`runs --archived`, only one's own)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from datetime import date, timedelta
from pathlib import Path

import httpx
import msgspec
import pytest
from redis import Redis

from shared.results import PastCall
from tests.cli.test_client import cli_env, tickertape
from tests.e2e.stack import Stack

TOKENS = {"alice": "alice-secret", "bob": "bob-secret"}


def until(check: Callable[[], str | None], timeout_s: float = 30.0) -> str:
    """``check()``'s first truthy answer, polled."""
    deadline = time.monotonic() + timeout_s
    while not (answer := check()):
        assert time.monotonic() < deadline, "gave up waiting"
        time.sleep(0.2)
    return answer


@pytest.fixture(scope="module")
def archiving(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Two users; a run ended 1.5 s ago is moved to the archive."""
    tokens = ",".join(f"{u}:{hashlib.sha256(t.encode()).hexdigest()}" for u, t in TOKENS.items())
    with Stack(
        redis_url, tmp_path_factory.mktemp("archiving"), TT_AUTH="1", TT_API_TOKENS=tokens,
        TT_HISTORY_DAYS=str(1.5 / 86_400), TT_RETENTION_INTERVAL_S="0.3",
    ) as running:  # fmt: skip
        yield running


@pytest.fixture(scope="module")
def stack(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with Stack(redis_url, tmp_path_factory.mktemp("history")) as running:
        yield running


def test_runs_archived_lists_the_archive_and_only_ones_own(archiving: Stack, tmp_path: Path) -> None:
    alice = {**cli_env(archiving, tmp_path / "a"), "TT_API_TOKEN": TOKENS["alice"]}
    bob = {**cli_env(archiving, tmp_path / "b"), "TT_API_TOKEN": TOKENS["bob"]}
    submitted = tickertape(alice, "submit", "IBM", "--analysts", "market", "--follow")
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    run_id = submitted.stdout.split("run ", 1)[1].split()[0]

    archived = until(lambda: _listing(tickertape(alice, "runs", "--archived").stdout, run_id))

    assert "IBM" in archived and "completed" in archived and "demo" in archived
    assert run_id not in tickertape(alice, "runs").stdout
    assert tickertape(bob, "runs", "--archived").stdout.strip() == "no archived runs"


def test_runs_shows_outcomes_demo_and_cost_and_show_gives_each_step_s_usage(
    stack: Stack, tmp_path: Path
) -> None:
    env = cli_env(stack, tmp_path)
    earlier = stack.submit("NVDA", ("market",))
    stack.wait_status(earlier, {"completed"})
    _as_if_made_weeks_ago(stack, earlier, "NVDA")
    later = stack.submit("NVDA", ("market",), maxCostUsd=2.0)
    stack.wait_status(later, {"completed"})

    row = until(lambda: _row(tickertape(env, "runs", "--symbol", "NVDA").stdout, earlier, "%"))
    outcome = httpx.get(f"{stack.api}/runs/{earlier}", timeout=10).json()["outcome"]

    assert outcome is not None and outcome["demo"] is True and outcome["horizonDays"] > 0
    mark = "✓" if outcome["correct"] else "✗"
    assert f"{mark} {outcome['realisedReturn'] * 100:+.1f}%" in row and " demo " in row
    assert "$" in row
    later_row = _row(tickertape(env, "runs", "--symbol", "NVDA").stdout, later, "")
    assert later_row and "✓" not in later_row and "✗" not in later_row
    shown = tickertape(env, "show", later)
    steps = [line for line in shown.stdout.splitlines() if line.startswith("  completed")]
    assert steps and all(" call" in line and "tokens · $" in line for line in steps[1:]), shown.stdout
    assert "LLM call" in shown.stdout and "of $2.00 budget" in shown.stdout
    watched = tickertape(env, "watch", later).stdout.splitlines()  # a first watch replays the run
    completed = [line.split("\t") for line in watched if "\tStepCompleted\t" in line]
    assert completed and all("tokens · $" in fields[-1] for fields in completed[1:]), watched
    assert any("LLM call" in line and "of $2.00 budget" in line for line in watched)


def _listing(table: str, run_id: str) -> str | None:
    return table if run_id in table else None


def _row(table: str, run_id: str, having: str) -> str | None:
    return next((line for line in table.splitlines() if line.startswith(run_id) and having in line), None)


def _as_if_made_weeks_ago(stack: Stack, run_id: str, symbol: str) -> None:
    """Move the desk's memory of ``run_id`` back 40 days: the next run measures what followed it
    (its memory recalls only calls of earlier days)."""
    with Redis.from_url(stack.env["REDIS_URL"]) as redis:
        key = next(k for k in redis.scan_iter(f"{stack.prefix}memory:*:{symbol}"))
        call = msgspec.json.decode(redis.hget(key, run_id), type=PastCall)  # type: ignore[arg-type]
        weeks_ago = (date.today() - timedelta(days=40)).isoformat()
        redis.hset(key, run_id, msgspec.json.encode(msgspec.structs.replace(call, date=weeks_ago)))
