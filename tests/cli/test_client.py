"""Client commands on the real stack; `watch` stopped mid-run and restarted: no repeat, no gap."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis

from tests.e2e.stack import Stack

EVENT_LINE = re.compile(r"^(\d+-\d+)\t(\w+)\t")


@pytest.fixture(scope="module")
def stack(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Paced so a run lasts a few seconds: long enough to interrupt a watcher in the middle."""
    with Stack(redis_url, tmp_path_factory.mktemp("stack"), step_delay_s=0.6) as running:
        yield running


class Watch:
    """``tickertape watch`` as a real process; its stdout collected line by line."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "watch", *args],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def event_ids(self) -> list[str]:
        return [m.group(1) for line in list(self.lines) if (m := EVENT_LINE.match(line))]

    def wait_events(self, count: int, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.event_ids()) < count:
            assert self.process.poll() is None, "\n".join(self.lines)
            assert time.monotonic() < deadline, "\n".join(self.lines)
            time.sleep(0.02)

    def finish(self, timeout_s: float = 60.0) -> int:
        code = self.process.wait(timeout_s)
        self.reader.join(5.0)
        return code


def cli_env(stack: Stack, cursor_home: Path) -> dict[str, str]:
    return {
        **os.environ,
        "TT_API_URL": stack.url,
        "TT_STATE_DIR": str(cursor_home),
        "TT_PREFIX": stack.prefix,
        "REDIS_URL": stack.env["REDIS_URL"],
    }


def stream_ids(stack: Stack, run_id: str) -> list[str]:
    with Redis.from_url(stack.env["REDIS_URL"], decode_responses=True) as redis:
        return [entry_id for entry_id, _ in redis.xrange(stack.keys.run(run_id))]


@pytest.mark.parametrize(
    ("source", "stop"),
    [([], signal.SIGTERM), (["--redis"], signal.SIGINT)],
    ids=["sse-sigterm", "redis-ctrl-c"],
)
def test_watch_killed_mid_run_and_restarted_resumes_without_duplicates(
    stack: Stack, tmp_path: Path, source: list[str], stop: signal.Signals
) -> None:
    run_id = stack.submit("AAPL", ("market", "risk"))
    env = cli_env(stack, tmp_path)

    first = Watch([run_id, *source], env)
    first.wait_events(6)
    first.process.send_signal(stop)
    assert first.finish() == 130
    assert any(f"watch {run_id}" in line for line in first.lines), first.lines
    # Detaching never cancels (on a loaded machine the run may already have finished).
    assert stack.run(run_id)["status"] in ("running", "completed")

    second = Watch([run_id, *source], env)
    assert second.finish() == 0, "\n".join(second.lines)

    seen = first.event_ids() + second.event_ids()
    assert len(first.event_ids()) >= 6 and second.event_ids()
    assert seen == stream_ids(stack, run_id)
    assert any("Decision:" in line for line in second.lines)


def test_watch_of_a_finished_run_shows_its_result_and_repeats_nothing(stack: Stack, tmp_path: Path) -> None:
    run_id = stack.submit("MSFT", ("market",))
    env = cli_env(stack, tmp_path)
    assert Watch([run_id], env).finish() == 0

    again = Watch([run_id], env)

    assert again.finish() == 0
    assert again.event_ids() == []
    assert any("Decision:" in line for line in again.lines)


def tickertape(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args], env=env, capture_output=True, text=True, timeout=60
    )


def test_submit_follow_then_runs_show_and_cancel(stack: Stack, tmp_path: Path) -> None:
    env = cli_env(stack, tmp_path)

    submitted = tickertape(env, "submit", "IBM", "--analysts", "market", "--follow")

    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    assert "Decision:" in submitted.stdout and "DEMO DATA" in submitted.stdout
    run_id = submitted.stdout.split("run ", 1)[1].split()[0]
    listed = tickertape(env, "runs", "--symbol", "IBM")
    assert run_id in listed.stdout and "completed" in listed.stdout
    shown = tickertape(env, "show", run_id, "--json")
    assert json.loads(shown.stdout)["status"] == "completed"
    cancelled = tickertape(env, "cancel", run_id)
    assert cancelled.returncode == 3 and "already finished (completed)" in cancelled.stdout


def test_bad_submit_names_the_field_and_gateway_down_says_what_to_do(stack: Stack, tmp_path: Path) -> None:
    env = cli_env(stack, tmp_path)

    bad = tickertape(env, "submit", "IBM", "--analysts", "astrology")
    down = tickertape({**env, "TT_API_URL": "http://127.0.0.1:9"}, "runs")

    assert bad.returncode == 3 and "field: analysts" in bad.stderr
    assert down.returncode == 4 and "tickertape up" in down.stderr


def test_ids_by_prefix_or_tag_human_times_export_and_cancel_codes(stack: Stack, tmp_path: Path) -> None:
    env = cli_env(stack, tmp_path)
    done = stack.submit("AMD", ("market",))
    stack.wait_status(done, {"completed"})
    running = stack.submit("AMD", ("market", "risk"))
    assert tickertape(env, "cancel", running[-6:]).returncode == 0
    stack.wait_status(running, {"cancelled"})
    again = tickertape(env, "cancel", running[-6:])
    assert again.returncode == 0 and "already cancelled" in again.stdout

    shown = tickertape(env, "show", done[:30])
    assert shown.returncode == 0, shown.stderr
    assert f"Run {done}" in shown.stdout and "LLM call" in shown.stdout
    assert f"{stack.url}/#/runs/{done}" in shown.stdout
    assert json.loads(tickertape(env, "show", done[-6:], "--format", "json").stdout)["runId"] == done
    exported = tickertape(env, "show", done[-6:], "--format", "md").stdout
    assert exported.startswith("# AMD — ") and f"/#/runs/{done})" in exported and "## Steps" in exported
    sections = [line for line in exported.splitlines() if line.startswith("## ")]
    desk = ["Analyst reports", "Bull vs bear debate", "Trader's proposal", "Risk debate", "Portfolio manager"]
    assert [next(i for i, s in enumerate(sections) if s[3:].startswith(d)) for d in desk] == list(range(5))
    assert "- Price target: " in exported and "**Aggressive (round 1):** " in exported

    ambiguous = tickertape(env, "show", done[:4])  # sortable ids: runs of one minute share a start
    assert ambiguous.returncode == 3 and "matches" in ambiguous.stderr
    missing = tickertape(env, "show", "zzzzzz")
    assert missing.returncode == 3 and "no run" in missing.stderr

    listed = tickertape(env, "runs", "--symbol", "AMD")
    assert "ago" in listed.stdout or "just now" in listed.stdout
    assert "T" in tickertape(env, "runs", "--symbol", "AMD", "--iso").stdout.splitlines()[1].split()[-1]
