"""Rows 2 and 6 as table rows: no-op runs against the peers, then runner processes and steps per run."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from bench import noop_e2e, peers
from bench.common import Row, median, quick, reps
from bench.noop_e2e import E2E


def n_runs() -> int:
    """Runs (and peer jobs) per repetition: the same N on both sides of the comparison."""
    return int(os.environ.get("BENCH_N", "20" if quick() else "1000"))


def peer_variants() -> tuple[str, ...]:
    """BENCH_PEERS=a,b picks variants (``none``: no peer); quick mode runs only saq."""
    raw = os.environ.get("BENCH_PEERS", "saq" if quick() else ",".join(peers.VARIANTS))
    return tuple(v for v in (v.strip() for v in raw.split(",")) if v in peers.VARIANTS)


def e2e_rows(results: Sequence[E2E], label: str) -> list[Row]:
    runs = results[0].n if results else 0
    incomplete = sum(r.n - r.completed for r in results)
    note = f"N={runs}" + (f", {incomplete} not completed" if incomplete else "")
    return [
        Row("2 no-op e2e", f"{label}: spawn → all in read model", "runs/s", [r.e2e_rate for r in results],
            note=note),
        Row("2 no-op e2e", f"{label}: first → last run (startup excluded)", "runs/s",
            [r.proc_rate for r in results]),
        Row("2 no-op e2e", f"{label}: submit (EventStore.submit, one by one)", "runs/s",
            [r.enq_rate for r in results]),
    ]  # fmt: skip


def peer_rows(results: Sequence[peers.PeerResult], wanted: Sequence[str]) -> list[Row]:
    rows = []
    for variant in peers.VARIANTS:
        found = next((p for p in results if p.variant == variant), None)
        figure = f"peer {variant}: spawn → last job"
        if found is None:
            rows.append(Row("2 no-op e2e", figure, "jobs/s", note="not measured: skipped (BENCH_PEERS)"))
        elif found.error and not found.e2e_rate:
            rows.append(Row("2 no-op e2e", figure, "jobs/s", note=f"not measured: {found.error}"))
        else:
            proc = median(found.proc_rate)
            rows.append(Row("2 no-op e2e", figure, "jobs/s", found.e2e_rate,
                            note=f"first → last {proc:,.0f} jobs/s"))  # fmt: skip
    return rows


def verdict(ours: Sequence[E2E], theirs: Sequence[peers.PeerResult]) -> Row:
    """Row 2's goal: ahead of every peer measured in this run (e2e rate, medians)."""
    measured = [p for p in theirs if p.e2e_rate]
    mine = [r.e2e_rate for r in ours]
    best = max(measured, key=lambda p: median(p.e2e_rate), default=None)
    goal = "ahead of every peer (e2e)"
    if not mine or best is None:
        return Row(
            "2 no-op e2e", "tickertape / best peer", "ratio", goal=goal, note="not measured: no peer result"
        )
    ratios = [m / median(best.e2e_rate) for m in mine]
    return Row("2 no-op e2e", f"tickertape / best peer ({best.variant})", "ratio", ratios, goal=goal,
               holds=median(mine) > median(best.e2e_rate))  # fmt: skip


def measure_e2e(redis_url: str, peers_redis_url: str, workdir: Path) -> list[Row]:
    """Row 2: one runner process against every peer, the same N, the same machine, this run."""
    import asyncio

    n, k = n_runs(), reps()
    ours = asyncio.run(noop_e2e.repeat(redis_url, workdir, "r1", n, k))
    wanted = peer_variants()
    theirs = peers.measure(peers_redis_url, n, k, workdir / "logs", wanted)
    return [*e2e_rows(ours, "tickertape, 1 runner"), *peer_rows(theirs, wanted), verdict(ours, theirs)]


def measure_scaling(redis_url: str, workdir: Path) -> list[Row]:
    """Row 6, warm (runner processes up before the runs arrive): 1, 2 and 4 runner processes;
    then CPU per run at 1, 10 and 50 steps per run."""
    import asyncio

    n, k = n_runs(), reps()
    rows = []
    for count in (1, 2, 4):
        found = asyncio.run(noop_e2e.repeat(redis_url, workdir, f"w{count}", n, k, count, warm=True))
        rows.append(_runners_row(count, found))
    for steps in (1, 10, 50):
        runs = 10 if quick() else max(50, n // (1 + steps // 5))
        found = asyncio.run(noop_e2e.repeat(redis_url, workdir, f"s{steps}", runs, k, 1, steps, warm=True))
        rows.append(_steps_row(steps, found))
    return rows


def _runners_row(count: int, results: Sequence[E2E]) -> Row:
    cpu = median([r.cpu_ms_per_run for r in results]) if results else float("nan")
    runner = median([r.runner_cpu_ms_per_run for r in results]) if results else float("nan")
    figure = f"no-op, {count} runner process{'es' if count > 1 else ''} (warm): submit → read model"
    note = f"CPU/run {cpu:.2f} ms, runner {runner:.2f} ms"
    return Row("6 scaling", figure, "runs/s", [r.e2e_rate for r in results], note=note)


def _steps_row(steps: int, results: Sequence[E2E]) -> Row:
    rate = median([r.e2e_rate for r in results]) if results else float("nan")
    events = median([r.events / r.n for r in results]) if results else float("nan")
    runner = median([r.runner_cpu_ms_per_run for r in results]) if results else float("nan")
    n = results[0].n if results else 0
    note = f"{events:.0f} events/run, runner {runner:.1f} ms, {rate:,.0f} runs/s, N={n}"
    figure = f"{steps} step{'s' if steps > 1 else ''} per run, 1 runner: CPU per run (all processes)"
    return Row("6 scaling", figure, "ms", [r.cpu_ms_per_run for r in results], note=note)
