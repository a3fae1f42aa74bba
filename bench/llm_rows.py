"""Rows 7-9 (issue 20): the LLM-bound workload as table rows, with their goals.

Row 7: in-flight runs per runner process (BENCH_INFLIGHT, default 10,100,1000,5000), each run
watched by one SSE client up to BENCH_INFLIGHT_WATCHED runs (default 1000). Row 8: watchers
per gateway process: BENCH_WATCHERS_PER_RUN (10) on each of BENCH_WATCH_RUNS (1000) live runs,
and BENCH_WATCH_ONE (1000) on one run. Row 9: peers on the same workload. One repetition per
size: a 1,000-run size takes about a minute of wall time, a 5,000-run one several.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from bench import llm_peers
from bench.common import Row, not_measured, percentile, quick
from bench.llm_workload import Outcome, Shape, measure, pipeline

P99_GOAL_MS = 100.0
RSS_PER_RUN_GOAL_KB = 100.0
OVERHEAD_GOAL = 0.02
GATEWAY_RSS_GOAL_MB = 100.0
P99_TEXT = f"<= {P99_GOAL_MS:.0f} ms"
CONNECTIONS_BOUND = 12
"""The gateway's pool (TT_GATEWAY_REDIS_POOL, 10) plus its SSE readers: what "constant" means
here, since the pool fills up to its size on the watchers' replays whatever their number."""
CONNECTIONS_GOAL = f"constant: <= {CONNECTIONS_BOUND} at any count"
GOAL_SIZE = 1000
"""The in-flight count the latency and overhead goals are stated at."""


def sizes(name: str, default: str, quick_default: str) -> tuple[int, ...]:
    raw = os.environ.get(name, "") or (quick_default if quick() else default)
    return tuple(int(x) for x in raw.split(",") if x.strip())


def count(name: str, default: int, quick_default: int) -> int:
    return int(os.environ.get(name, "") or (quick_default if quick() else default))


def _at_goal(n: int) -> bool:
    return n == GOAL_SIZE or (quick() and n == max(sizes("BENCH_INFLIGHT", "", "5,20")))


def inflight_rows(n: int, out: Outcome) -> list[Row]:
    label, row = f"{n:,} in flight", "7 LLM runs/runner"
    p99 = percentile(out.latencies_ms, 99)
    rss_kb = max(out.runner_rss_peak_mb - out.runner_rss_idle_mb, 0.0) * 1024 / max(n, 1)
    gated = _at_goal(n)
    calls = sum(out.sim_statuses.values())
    frames = f"{len(out.latencies_ms):,} frames, {out.watchers:,} watchers"
    top = ", ".join(
        f"{name} {calls / max(n, 1):.0f}x {us / max(n, 1) / 1000:.1f} ms" for name, calls, us in out.redis_top
    )
    return [
        Row(row, f"{label}: completed", "%", [100 * out.completed / max(n, 1)], "100 %",
            out.completed == n, f"{pipeline()} pipeline, {out.wall_s:.0f} s wall, {calls:,} model calls"),
        Row(row, f"{label}: lease takeovers", "", [float(out.takeovers)], "0", out.takeovers == 0),
        Row(row, f"{label}: append → SSE client p99", "ms", [p99], P99_TEXT if gated else "",
            p99 <= P99_GOAL_MS if gated else None, frames),
        Row(row, f"{label}: runner RSS per in-flight run", "KB", [rss_kb],
            f"<= {RSS_PER_RUN_GOAL_KB:.0f} KB" if n >= GOAL_SIZE else "",
            rss_kb <= RSS_PER_RUN_GOAL_KB if n >= GOAL_SIZE else None,
            f"peak {out.runner_rss_peak_mb:.0f} MB, idle {out.runner_rss_idle_mb:.0f} MB"),
        Row(row, f"{label}: runner CPU per run", "ms", [1000 * out.runner_cpu_s / max(n, 1)],
            note=f"{calls / max(n, 1):.0f} model calls a run"),
        Row(row, f"{label}: simulator (the load) CPU per run", "ms", [1000 * out.sim_cpu_s / max(n, 1)],
            note=f"{out.sim_cpu_s / max(out.wall_s, 1e-9):.2f} of a core over the wall time"),
        Row(row, f"{label}: Redis CPU per run", "ms", [1000 * out.redis_cpu_s / max(n, 1)],
            note=f"{out.redis_calls / max(n, 1):.0f} commands a run (all processes); top: {top}"),
        Row(row, f"{label}: overhead (run time beyond model time)", "%", [100 * out.overhead_share],
            f"<= {100 * OVERHEAD_GOAL:.0f} %" if gated else "",
            out.overhead_share <= OVERHEAD_GOAL if gated else None),
    ]  # fmt: skip


def safe(n: int, out: Outcome) -> bool:
    rss_kb = (out.runner_rss_peak_mb - out.runner_rss_idle_mb) * 1024 / max(n, 1)
    return (out.completed == n and out.takeovers == 0 and percentile(out.latencies_ms, 99) <= P99_GOAL_MS
            and rss_kb <= RSS_PER_RUN_GOAL_KB * 2)  # fmt: skip


def measure_inflight(redis_url: str, workdir: Path) -> list[Row]:
    watched_cap = count("BENCH_INFLIGHT_WATCHED", 1000, 20)
    rows: list[Row] = []
    largest_safe = 0
    for n in sizes("BENCH_INFLIGHT", "10,100,1000,5000", "5,20"):
        try:
            out = asyncio.run(measure(redis_url, workdir / f"inflight-{n}", Shape(n, 1, min(n, watched_cap))))
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"[:160]
            rows.append(not_measured("7 LLM runs/runner", f"{n:,} in flight", "", "", reason))
            continue
        rows += inflight_rows(n, out)
        largest_safe = max(largest_safe, n) if safe(n, out) else largest_safe
    note = "largest size of the sweep with every run completed, no takeover, p99 <= 100 ms"
    rows.append(Row("7 LLM runs/runner", "safe maximum measured", "runs", [float(largest_safe)], note=note))
    return rows


def watcher_rows(label: str, out: Outcome, gated: bool) -> list[Row]:
    row = "8 watchers/gateway"
    p99 = percentile(out.latencies_ms, 99)
    connections = out.gateway_connections
    growth = max(out.gateway_rss_peak_mb - out.gateway_rss_before_mb, 0.0)
    cpu = out.loadgen_cpu_s
    load = ", ".join(f"{100 * c / max(out.wall_s, 1e-9):.0f} %" for c in cpu)
    steady = connections[1:] or connections
    spread = f"{min(steady)}-{max(steady)}"
    busiest = max(cpu, default=0) * 100 / max(out.wall_s, 1e-9)
    wall = max(out.wall_s, 1e-9)
    return [
        Row(row, f"{label}: append → client p99", "ms", [p99], P99_TEXT if gated else "",
            p99 <= P99_GOAL_MS if gated else None,
            f"p50 {percentile(out.latencies_ms, 50):.1f} ms, {len(out.latencies_ms):,} frames, "
            f"{out.watchers_ended:,}/{out.watchers:,} saw the end"),
        Row(row, f"{label}: gateway Redis connections (idle → with watchers)", "", [float(max(steady))],
            CONNECTIONS_GOAL, max(steady) <= CONNECTIONS_BOUND, f"idle {connections[0]}, then {spread}"),
        Row(row, f"{label}: gateway RSS growth", "MB", [growth], f"<= {GATEWAY_RSS_GOAL_MB:.0f} MB",
            growth <= GATEWAY_RSS_GOAL_MB),
        Row(row, f"{label}: load generator CPU ({len(cpu)} processes)", "% of a core", [busiest],
            note=f"each: {load}; below 100 % = not the bottleneck"),
        Row(row, f"{label}: gateway CPU (one process)", "% of a core", [100 * out.gateway_cpu_s / wall],
            note=f"over {out.wall_s:.0f} s; same 2 cores: runner {100 * out.runner_cpu_s / wall:.0f} %, "
            f"simulator {100 * out.sim_cpu_s / wall:.0f} %, Redis {100 * out.redis_cpu_s / wall:.0f} %"),
    ]  # fmt: skip


def measure_watchers(redis_url: str, workdir: Path) -> list[Row]:
    runs, per_run = count("BENCH_WATCH_RUNS", 1000, 10), count("BENCH_WATCHERS_PER_RUN", 10, 2)
    one = count("BENCH_WATCH_ONE", 1000, 20)
    rows: list[Row] = []
    for label, shape, gated in (
        # one gateway process (the row's unit), not the supervisor and a worker per CPU
        (
            f"{runs * per_run:,} watchers on {runs:,} runs",
            Shape(runs, per_run, runs, gateway_workers=1),
            True,
        ),
        (f"{one:,} watchers on one run", Shape(1, 0, 0, one, gateway_workers=1), True),
    ):
        try:
            out = asyncio.run(measure(redis_url, workdir / f"watch-{shape.runs}-{shape.on_one}", shape))
        except Exception as exc:
            rows.append(
                not_measured("8 watchers/gateway", label, "", "", f"{type(exc).__name__}: {exc}"[:160])
            )
            continue
        rows += watcher_rows(label, out, gated)
    return rows


PEER_ROW = "9 LLM peers"


def peer_size() -> int:
    """BENCH_PEERS_INFLIGHT: jobs in flight for row 9 (the goal's 1,000; BENCH_QUICK: 10)."""
    return count("BENCH_PEERS_INFLIGHT", GOAL_SIZE, 10)


def chosen_peers() -> tuple[str, ...]:
    """BENCH_LLM_PEERS: comma-separated peers for row 9 (default all four; ``none``: none)."""
    raw = os.environ.get("BENCH_LLM_PEERS", ",".join(llm_peers.PEERS))
    return tuple(p.strip() for p in raw.split(",") if p.strip() and p.strip() != "none")


def system_rows(
    name: str, n: int, completed: int, wall_s: float, latencies: list[float], note: str
) -> list[Row]:
    """Completion time and progress latency of one system (Tickertape or a peer) at ``n`` in flight."""
    label = f"{name}: {n:,} in flight"
    done = f"{completed:,}/{n:,} completed; {note}"
    p50 = percentile(latencies, 50)
    return [
        Row(PEER_ROW, f"{label}, completion time (first submit → last done)", "s", [wall_s], note=done),
        Row(PEER_ROW, f"{label}, progress latency p99", "ms", [percentile(latencies, 99)],
            note=f"p50 {p50:.1f} ms, {len(latencies):,} reports"),
    ]  # fmt: skip


def peer_system_rows(run: llm_peers.PeerRun) -> list[Row]:
    """A peer's figures; one cut at its limit still shows what it completed (k/n in the limit)."""
    if run.error and not run.latencies_ms:
        return [not_measured(PEER_ROW, f"peer {run.peer}: {run.n:,} in flight", "", "", run.error)]
    cpu_ms = 1000 * run.worker_cpu_s / max(run.n, 1)
    rss_kb = max(run.worker_rss_peak_mb - run.worker_rss_idle_mb, 0.0) * 1024 / max(run.n, 1)
    cut = f"cut at its {run.limit_s:.0f} s limit; " if run.completed < run.n else ""
    client = os.environ.get("PEER_HTTP", "sharded")
    note = (
        f"{cut}progress: {llm_peers.PROGRESS[run.peer]}; model client: {client}; "
        f"worker CPU {cpu_ms:.0f} ms/job, "
        f"RSS {rss_kb:.0f} KB/job, "
        + (
            f"model time {run.simulated_s / run.n:.1f} s/job"
            if not cut
            else f"model time {run.simulated_s:.0f} s in all"
        )
        + (f"; {run.error}" if run.error else "")
    )
    return system_rows(f"peer {run.peer}", run.n, run.completed, run.wall_s, run.latencies_ms, note)


def ratio_rows(n: int, ours: Outcome, peers: list[llm_peers.PeerRun]) -> list[Row]:
    """Tickertape over the best peer on each figure: < 1 is ahead, the moonshot is <= 0.5."""
    whole = [p for p in peers if p.completed == n]
    bound = ""
    if not whole and ours.completed == n:
        # no peer finished within its limit: its completion time is at least the limit, so the
        # ratio over the partial figures is an upper bound
        whole, bound = (
            [p for p in peers if p.latencies_ms],
            " (no peer finished: over their partial runs; for completion an upper bound)",
        )
    if not whole or ours.completed != n:
        return [
            not_measured(PEER_ROW, "tickertape / best peer", "", "ahead of every peer", "no complete pair")
        ]
    rows = []
    for figure, mine, theirs in (
        ("completion time", ours.wall_s, {p.peer: p.wall_s for p in whole}),
        ("progress latency p99", percentile(ours.latencies_ms, 99),
         {p.peer: percentile(p.latencies_ms, 99) for p in whole}),
    ):  # fmt: skip
        best = min(theirs, key=lambda k: theirs[k])
        ratio = mine / max(theirs[best], 1e-9)
        moon = ("moonshot holds" if ratio <= 0.5 else f"moonshot 0.5 missed by {ratio / 0.5:.1f}x") + bound
        rows.append(Row(PEER_ROW, f"tickertape / best peer ({best}): {figure} at {n:,}", "ratio", [ratio],
                        "< 1 (ahead); moonshot <= 0.5", ratio < 1.0, moon))  # fmt: skip
    return rows


def measure_peers(redis_url: str, peers_redis_url: str, workdir: Path) -> list[Row]:
    """Row 9: Tickertape (the ``calls`` pipeline: the same ten bare calls) and each peer, same size,
    same simulator settings, one after the other."""
    n = peer_size()
    shape = Shape(n, 1, min(n, count("BENCH_INFLIGHT_WATCHED", 1000, 20)), pipeline="calls")
    ours = asyncio.run(measure(redis_url, workdir / f"peers-tickertape-{n}", shape))
    overhead = 100 * ours.overhead_share
    note = f"progress: append → SSE client (gateway), {ours.watchers:,} watchers; overhead {overhead:.2f} %"
    rows = system_rows("tickertape (calls pipeline)", n, ours.completed, ours.wall_s, ours.latencies_ms, note)
    chosen = chosen_peers()
    peers = llm_peers.measure(n, peers_redis_url, workdir / "llm-peers", chosen)
    for run in peers:
        rows += peer_system_rows(run)
    for peer in (p for p in llm_peers.PEERS if p not in chosen):
        reason = "left out by BENCH_LLM_PEERS"
        rows.append(not_measured(PEER_ROW, f"peer {peer}: {n:,} in flight", "", "", reason))
    return rows + ratio_rows(n, ours, peers)
