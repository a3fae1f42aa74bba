"""The capacity tool measures a real offline run in a real redis-server (numbers for the runbook)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_capacity_tool_measures_one_run() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "deploy" / "tools" / "capacity.py"), "--analysts", "market", "--json"],
        capture_output=True,
        text=True,
        timeout=90,
        check=True,
        cwd=ROOT,
    )
    doc = json.loads(out.stdout)
    steps = doc["steps"]
    assert steps == 6  # data, one analyst, debate, trader, risk debate, portfolio manager
    # requested + started + (started, progress..., completed) per step + completed
    assert doc["events"] >= 2 + 3 * steps + 1
    assert doc["run_stream_bytes"] >= doc["encoded_bytes"] > 0
    assert doc["global_log_bytes"] >= doc["run_stream_bytes"]
    assert 100 < doc["bytes_per_event"] < 100_000
