"""What every benchmark shares: a result row, summaries, processes of our own, CPU accounting."""

from __future__ import annotations

import math
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from shared.redis_server import free_port

ROOT = Path(__file__).resolve().parents[1]


def quick() -> bool:
    """BENCH_QUICK=1: tiny sizes, for a smoke run (figures are then meaningless)."""
    return os.environ.get("BENCH_QUICK", "") not in ("", "0")


def raise_open_files() -> int:
    """The soft open-files limit raised to the hard one (10,000 watchers are 10,000 sockets in
    the load generators and the gateway; children inherit it). Returns the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def reps(default: int = 3) -> int:
    """Repetitions per figure (BENCH_REPS overrides; never fewer than 1)."""
    return max(1, int(os.environ.get("BENCH_REPS", str(1 if quick() else default))))


@dataclass(slots=True)
class Row:
    """One line of the table: a figure measured ``len(values)`` times (empty: not measured)."""

    row: str
    figure: str
    unit: str
    values: list[float] = field(default_factory=list)
    goal: str = ""
    holds: bool | None = None
    note: str = ""

    @property
    def measured(self) -> bool:
        return bool(self.values)

    def summary(self) -> tuple[float, float, float] | None:
        return summarize(self.values) if self.values else None

    def as_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        s = self.summary()
        doc["median"], doc["min"], doc["max"] = (s[1], s[0], s[2]) if s else (None, None, None)
        return doc


def not_measured(row: str, figure: str, unit: str, goal: str, reason: str) -> Row:
    return Row(row, figure, unit, [], goal, None, f"not measured: {reason}")


def summarize(values: Sequence[float]) -> tuple[float, float, float]:
    """(min, median, max)."""
    return min(values), statistics.median(values), max(values)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (inclusive method); nan for no values."""
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[max(1, min(99, round(p))) - 1]


def python_env(extra: Mapping[str, str]) -> dict[str, str]:
    """The environment for a child Python process run from the repository root."""
    env = {**os.environ, **extra}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


class Child:
    """``python -m module args`` of our own (a load generator, a ceiling app); waits for a URL."""

    def __init__(
        self, module: str, args: Iterable[str], log: Path, env: Mapping[str, str] | None = None
    ) -> None:
        self.argv = [sys.executable, "-m", module, *args]
        self.log = log
        self.env = python_env(env or {})
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Child:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        return self

    def wait_http(self, url: str, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"{self.argv} exited: {self.log.read_text(errors='replace')[-2000:]}")
            try:
                if httpx.get(url, timeout=0.5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"{url} not answering after {timeout_s}s")

    def stop(self, timeout_s: float = 10.0) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run_json(module: str, args: Iterable[str], timeout_s: float) -> dict[str, Any]:
    """Run ``python -m module args`` to its end; its last stdout line is a JSON document."""
    import json

    done = subprocess.run(
        [sys.executable, "-m", module, *args],
        env=python_env({}), cwd=ROOT, capture_output=True, timeout=timeout_s, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(
            f"{module} failed ({done.returncode}): {done.stderr.decode(errors='replace')[-2000:]}"
        )
    doc: dict[str, Any] = json.loads(done.stdout.decode().strip().splitlines()[-1])
    return doc


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (a gateway's supervisor and its workers), from /proc."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            pass
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its descendants so far, from /proc (0 once gone)."""
    return sum(_own_cpu_seconds(p) for p in process_tree(pid))


def _own_cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    """Resident set size in MiB of a process and its descendants (nan once it is gone)."""
    root, *children = [_own_rss_mb(p) for p in process_tree(pid)]
    return root + sum(size for size in children if not math.isnan(size))


def _own_rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def port() -> int:
    return free_port()


def export(ref: str, into: Path) -> Path:
    """The tree of git revision ``ref`` (exported with ``git archive``, not checked out) under
    ``into``, or ``ref`` itself if it is a directory: the "before" of a before/after comparison."""
    if Path(ref).is_dir():
        return Path(ref).resolve()
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", ref], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into
