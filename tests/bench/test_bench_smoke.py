"""``python -m bench`` in its tiny quick mode: every row of issue 10 is in the table and the JSON.

Only the shape is checked; a timing is never a pass/fail threshold here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

EXPECTED = [
    ("1 submit", "gateway POST /runs"),
    ("1 submit", "ceiling: FastAPI + one XADD"),
    ("1 submit", "gateway / ceiling"),
    ("2 no-op e2e", "tickertape, 1 runner: spawn → all in read model"),
    *[("2 no-op e2e", f"peer {v}: spawn → last job") for v in
      ("arq-poll10ms", "celery-solo", "taskiq-stream", "saq", "bullmq-c10")],
    ("2 no-op e2e", "tickertape / best peer"),
    ("3 SSE", "clients: append → client p99"),
    ("3 SSE", "clients: gateway Redis connections"),
    ("3 SSE", "clients: gateway RSS"),
    ("4 projector", "catch-up from a backlog"),
    ("4 projector", "lag p99 at"),
    ("5 recovery", "SIGKILL → run resumed on another runner"),
    ("5 recovery", "LLM calls repeated after the kill"),
    ("5 cancel", "cancel: RunCancelled → confirmed, p99"),
    *[("6 scaling", f"no-op, {k} runner process") for k in (1, 2, 4)],
    *[("6 scaling", f"{k} step{'s' if k > 1 else ''} per run") for k in (1, 10, 50)],
    *[("7 LLM runs/runner", f"20 in flight: {f}") for f in
      ("completed", "lease takeovers", "append → SSE client p99", "runner RSS per in-flight run",
       "runner CPU per run", "Redis CPU per run", "overhead")],
    ("7 LLM runs/runner", "safe maximum measured"),
    *[("8 watchers/gateway", f"{w}: {f}") for w in ("20 watchers on 10 runs", "20 watchers on one run")
      for f in ("append → client p99", "gateway Redis connections", "gateway RSS growth",
                "load generator CPU")],
    *[("9 LLM peers", f"tickertape (calls pipeline): 10 in flight, {f}") for f in
      ("completion time", "progress latency p99")],
    *[("9 LLM peers", f"peer {v}: 10 in flight") for v in ("arq", "saq", "taskiq", "bullmq")],
]  # fmt: skip


@pytest.mark.timeout(420)
def test_quick_bench_prints_every_row_and_valid_json(tmp_path: Path) -> None:
    quick = {"BENCH_QUICK": "1", "BENCH_REPS": "1", "BENCH_PEERS": "none", "BENCH_LLM_PEERS": "none"}
    env = {**os.environ, **quick}
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--out", str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=400, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    doc = json.loads((tmp_path / "latest.json").read_text())
    rows = doc["rows"]
    markdown = (tmp_path / "latest.md").read_text()
    for section, figure in EXPECTED:
        found = [r for r in rows if r["row"] == section and figure in r["figure"]]
        assert found, f"no row {section!r} / {figure!r} in {[(r['row'], r['figure']) for r in rows]}"
        assert any(figure in line for line in done.stdout.splitlines()), f"{figure!r} not printed"
        assert figure.split(":")[0] in markdown
    for row in rows:
        assert row["values"] or row["note"].startswith("not measured"), row
        assert {"median", "min", "max", "goal", "holds"} <= row.keys()
