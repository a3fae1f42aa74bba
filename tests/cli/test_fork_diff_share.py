"""`tickertape submit` joining a running run, `fork`, `diff`, `share` and `unshare` against a real
`tickertape up` (each step paced at 1 s, so a run is still running when the CLI's submit joins it)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from services.cli.forks import render_diff
from services.cli.shares import duration_s, parse_link
from tests.cli.test_finds_its_stack import cli
from tests.cli.test_up import Up, up_env


@pytest.fixture
def paced(tmp_path: Path) -> Iterator[Up]:
    launcher = Up(up_env(tmp_path / "state", TT_STEP_DELAY_S="1"))
    try:
        launcher.wait_for("Tickertape is up")
        yield launcher
    finally:
        launcher.stop()


@pytest.mark.timeout(120)
def test_join_fork_diff_and_share_from_the_command_line(paced: Up, tmp_path: Path) -> None:
    state = tmp_path / "state"
    running = httpx.post(f"{paced.api}/runs", json={"symbol": "AAPL", "analysts": ["market"]}).json()["runId"]

    joined = cli(state, "submit", "AAPL", "--analysts", "market")

    assert joined.returncode == 0, joined.stderr
    assert f"already running — showing that run: run {running}" in joined.stdout
    source = httpx.get(f"{paced.api}/runs/{running}", params={"wait": 30}, timeout=40).json()
    assert source["status"] == "completed"

    forked = cli(state, "fork", running[-6:], "--from-step", "trader", "--risk-rounds", "2", "--follow")

    assert forked.returncode == 0, forked.stdout + forked.stderr
    assert "reused: data_collection, analyst:market, research_debate" in forked.stdout
    fork_id = forked.stdout.split(": run ", 1)[1].split()[0]
    shown = cli(state, "diff", running[-8:], fork_id[-6:])  # the ends: prefixes of runs this close are alike
    assert shown.returncode == 0, shown.stderr
    assert any(
        line.startswith("≠ options.riskRounds") and line.split()[-2:] == ["1", "2"]
        for line in shown.stdout.splitlines()
    ), shown.stdout
    as_json = json.loads(cli(state, "diff", running, fork_id, "--format", "json").stdout)
    assert as_json["changed"]["options"]["b"]["riskRounds"] == 2 and "symbol" in as_json["same"]

    shared = cli(state, "share", running, "--expires", "1h")

    assert shared.returncode == 0, shared.stderr
    link = shared.stdout.splitlines()[0]
    assert httpx.get(link).json()["runId"] == running and "until 20" in shared.stdout
    revoked = cli(state, "unshare", link)
    assert revoked.returncode == 0, revoked.stderr
    assert httpx.get(link).status_code == 404
    assert cli(state, "share", running, "--expires", "soon").returncode == 2


def test_durations_links_and_the_diff_table() -> None:
    assert [duration_s(t) for t in ("90", "90s", "15m", "1h", "7D")] == [90, 90, 900, 3600, 7 * 86400]
    assert parse_link("http://h:1/api/trading/shared/abc.def.ghi") == ("abc", "def")
    table = render_diff(
        {
            "a": "A1",
            "b": "B2",
            "changed": {
                "decision": {"a": "BUY", "b": "HOLD"},
                "options": {"a": {"x": 1, "y": 2}, "b": {"x": 1, "y": 3}},
            },
            "same": ["symbol"],
        }
    ).splitlines()
    assert table[:2] == ["A  A1", "B  B2"]
    assert [line.split() for line in table[4:6]] == [
        ["≠", "decision", "BUY", "HOLD"],
        ["≠", "options.y", "2", "3"],
    ]
    assert table[-1] == "  same: symbol"
