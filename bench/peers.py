"""Row 2's comparison: the peer job queues' no-op throughput, through the team's harness.

``../shared/peers/run-peers.sh REDIS_URL N REPS VARIANT`` is called once per variant (the harness
stops at the first variant that fails, so one broken peer must not hide the others). The Redis
given to it is one of its own: the harness flushes it.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import ROOT

logger = logging.getLogger(__name__)

HARNESS = Path(os.environ.get("BENCH_PEERS_HARNESS", str(ROOT.parent / "shared" / "peers" / "run-peers.sh")))
"""The team's peer harness, beside the checkout (``../shared/peers``); ``BENCH_PEERS_HARNESS``
points elsewhere (a clone in another folder)."""
VARIANTS = ("arq-poll10ms", "celery-solo", "taskiq-stream", "saq", "bullmq-c10")


@dataclass(slots=True)
class PeerResult:
    """One variant: per-repetition figures, or why there are none."""

    variant: str
    e2e_rate: list[float] = field(default_factory=list)
    proc_rate: list[float] = field(default_factory=list)
    enq_rate: list[float] = field(default_factory=list)
    worker_cpu_s: list[float] = field(default_factory=list)
    summary: dict[str, list[float]] = field(default_factory=dict)
    error: str = ""


def parse(variant: str, output: str) -> PeerResult:
    """Per-repetition lines (``VARIANT repK: key=value ...``) and the SUMMARY line."""
    result = PeerResult(variant)
    for line in output.splitlines():
        if line.startswith(f"{variant} rep") and "TIMEOUT" not in line:
            pairs = dict(p.split("=", 1) for p in line.split("|")[0].split()[2:] if "=" in p)
            result.e2e_rate.append(float(pairs["e2e_rate"]))
            result.proc_rate.append(float(pairs["proc_rate"]))
            result.enq_rate.append(float(pairs["enq_rate"]))
            result.worker_cpu_s.append(float(pairs["worker_cpu_s"]))
        elif line.startswith(f"SUMMARY {variant} "):
            result.summary = json.loads(line.split(" ", 4)[4])
        elif line.startswith("install of "):
            result.error = line.strip()
    if not result.e2e_rate and not result.error:
        result.error = _last_error(output) or "no repetition finished"
    return result


def _last_error(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if "Error" in line or "TIMEOUT" in line or "failed" in line]
    return (errors or lines or [""])[-1][:200]


def run_variant(redis_url: str, variant: str, n: int, n_reps: int, log_dir: Path) -> PeerResult:
    """One variant through the harness (its first install may take minutes; cached afterwards)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(
            ["bash", str(HARNESS), redis_url, str(n), str(n_reps), variant],
            cwd=ROOT, capture_output=True, text=True, timeout=900, check=False,
            env={**os.environ, "PYTHONPATH": ""},
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return PeerResult(variant, error="harness timed out after 900 s")
    output = done.stdout + done.stderr
    (log_dir / f"peer-{variant}.log").write_text(output)
    return parse(variant, output)


def measure(
    redis_url: str, n: int, n_reps: int, log_dir: Path, variants: tuple[str, ...] = VARIANTS
) -> list[PeerResult]:
    if not HARNESS.exists():
        return [PeerResult(v, error=f"harness not found at {HARNESS}") for v in variants]
    results = []
    for variant in variants:
        logger.info("peer %s: N=%d reps=%d", variant, n, n_reps)
        results.append(run_variant(redis_url, variant, n, n_reps, log_dir))
    return results
