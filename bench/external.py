"""Rows 3, 4 and 5 from the benches the service owners wrote, repeated and put into table rows.

Their modules stay theirs: this imports their building blocks (one round of the SSE fan-out,
the projector's fill / catch-up / steady) and only adds repetitions, RSS sampling and goals.
When a module is missing or its shape changed, the rows say "not measured" with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.common import Row, median, not_measured, percentile, quick, reps, rss_mb
from shared.keys import PROJECTOR_GROUP
from shared.redis_io import connect
from shared.redis_server import free_port

SSE_P99_GOAL_MS = 50.0
"""Issue 14's bound at 1,000 clients through uvicorn's and Starlette's public interfaces (issue
10 asked 25 ms of a fan-out that wrote to the sockets itself; docs/benchmarks.md, row 3)."""
RSS_GOAL_MB = 50.0
CATCH_UP_GOAL = 50_000.0
CATCH_UP_TEXT = f">= {CATCH_UP_GOAL:,.0f}/s"
STEADY_RATE = 2000.0
CANCEL_P99_GOAL_MS = 250.0
SSE_REPS = 5
"""Rounds per SSE size: a round is ~1 s of live events, so one stall of the shared machine moves
its p99; the median of five is not moved by two."""


def available(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def guarded(rows_if_failed: Callable[[str], list[Row]], run: Callable[[], list[Row]]) -> list[Row]:
    """``run()``, or the rows that say why it could not be measured."""
    try:
        return run()
    except Exception as exc:  # a bench that breaks must not take the table with it
        return rows_if_failed(f"{type(exc).__name__}: {exc}"[:160] or type(exc).__name__)


# ---------------------------------------------------------------- row 3: SSE fan-out


def sse_sizes() -> tuple[int, ...]:
    return (1, 20, 100) if quick() else (1, 100, 1000)


def sse_missing(reason: str) -> list[Row]:
    out = []
    for n in sse_sizes():
        out += [
            not_measured("3 SSE", f"{n} clients: append → client p99", "ms", _p99_goal(n), reason),
            not_measured("3 SSE", f"{n} clients: gateway Redis connections", "", "constant", reason),
            not_measured("3 SSE", f"{n} clients: gateway RSS", "MB", "", reason),
        ]
    return out


def _p99_goal(n: int) -> str:
    return f"<= {SSE_P99_GOAL_MS:.0f} ms" if n == max(sse_sizes()) else ""


async def _max_rss(pid: int, out: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        out.append(rss_mb(pid))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.02)


async def _sse_round(sse: Any, url: str, port: int, store: Any, pid: int, n: int) -> dict[str, float]:
    samples: list[float] = []
    stop = asyncio.Event()
    sampler = asyncio.create_task(_max_rss(pid, samples, stop))
    try:
        row: dict[str, float] = await sse.one_round(url, port, store, n)
    finally:
        stop.set()
        await sampler
    row["rss_mb"] = max(samples)
    return row


async def _sse(redis_url: str, workdir: Path) -> list[Row]:
    from bench import sse_fanout as sse
    from shared.keys import Keys
    from shared.store import EventStore

    state = workdir / "sse"
    state.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    gateway = sse.start_gateway(redis_url, state, port)
    redis = connect(redis_url)
    found: dict[int, list[dict[str, float]]] = {n: [] for n in sse_sizes()}
    try:
        await sse.wait_healthy(url, gateway)
        for _ in range(reps(SSE_REPS)):
            for n in sse_sizes():
                found[n].append(
                    await _sse_round(sse, url, port, EventStore(redis, Keys("tt:")), gateway.pid, n)
                )
    finally:
        gateway.terminate()
        gateway.wait(15)
        await redis.aclose()
    return sse_rows(found)


def sse_rows(found: dict[int, list[dict[str, float]]]) -> list[Row]:
    sizes = sorted(found)
    small, big = found[sizes[0]], found[sizes[-1]]
    conns_flat = median([r["connections"] for r in big]) == median([r["connections"] for r in small])
    growth = (median([r["rss_mb"] for r in big]) - median([r["rss_mb"] for r in small])) * 1000 / sizes[-1]
    out = []
    for n in sizes:
        rounds, last = found[n], n == sizes[-1]
        missing = sum(r["missing"] for r in rounds)
        note = f"p50 {median([r['p50'] for r in rounds]):.1f} ms" + (
            f", {missing:.0f} missing" if missing else ""
        )
        p99s = [r["p99"] for r in rounds]
        out += [
            Row("3 SSE", f"{n} clients: append → client p99", "ms", p99s, goal=_p99_goal(n),
                holds=(median(p99s) <= SSE_P99_GOAL_MS) if last else None,
                note=note),
            Row("3 SSE", f"{n} clients: gateway Redis connections", "", [r["connections"] for r in rounds],
                goal="constant" if last else "", holds=conns_flat if last else None),
            Row("3 SSE", f"{n} clients: gateway RSS (max)", "MB", [r["rss_mb"] for r in rounds],
                goal=f"<= +{RSS_GOAL_MB:.0f} MB / 1000 clients" if last else "",
                holds=(growth <= RSS_GOAL_MB) if last else None,
                note=f"+{growth:.1f} MB per 1000 clients over 1" if last else ""),
        ]  # fmt: skip
    return out


def measure_sse(redis_url: str, workdir: Path) -> list[Row]:
    if not available("bench.sse_fanout"):
        return sse_missing("bench/sse_fanout.py (gateway owner) not present")
    return guarded(sse_missing, lambda: asyncio.run(_sse(redis_url, workdir)))


# ---------------------------------------------------------------- row 4: projector


def projector_missing(reason: str) -> list[Row]:
    return [
        not_measured(
            "4 projector", "catch-up from a backlog", "events/s", f">= {CATCH_UP_GOAL:,.0f}/s", reason
        ),
        not_measured("4 projector", f"lag p99 at {STEADY_RATE:,.0f} events/s", "ms", "", reason),
    ]


async def _projector(redis_url: str, workdir: Path) -> list[Row]:
    from bench import projector_bench as pb

    total = 5_000 if quick() else 100_000
    rate, seconds = (200.0, 1.0) if quick() else (STEADY_RATE, 5.0)
    await pb.fill(redis_url, total)
    redis = connect(redis_url)
    rates: list[float] = []
    try:
        for i in range(reps()):
            with contextlib.suppress(Exception):
                await redis.xgroup_destroy(pb.KEYS.events, PROJECTOR_GROUP)
            (workdir / f"catchup{i}").mkdir(parents=True, exist_ok=True)
            catch_up = pb.catch_up(redis_url, total, 1000, workdir / f"catchup{i}")
            done = await asyncio.wait_for(catch_up, 30 if quick() else 120)
            rates.append(done[0])
    finally:
        await redis.aclose()
    p99s, p50s, achieved = [], [], []
    for i in range(reps()):
        (workdir / f"steady{i}").mkdir(parents=True, exist_ok=True)
        lags = await asyncio.wait_for(
            pb.steady(redis_url, rate, seconds, workdir / f"steady{i}"), seconds + 90
        )
        achieved.append(await _offered(redis_url, pb.KEYS.events))
        p99s.append(percentile(lags, 99) * 1000)
        p50s.append(percentile(lags, 50) * 1000)
    return projector_rows(total, rates, rate, p99s, p50s, achieved)


def _ms(stream_id: object) -> int:
    text = stream_id.decode() if isinstance(stream_id, bytes) else str(stream_id)
    return int(text.split("-")[0])


async def _offered(redis_url: str, stream: str) -> float:
    """Events/s the steady run really appended: log length over its first-to-last ID span."""
    redis = connect(redis_url)
    try:
        first, last = await redis.xrange(stream, count=1), await redis.xrevrange(stream, count=1)
        if not first or not last:
            return float("nan")
        span_ms = _ms(last[0][0]) - _ms(first[0][0])
        return int(await redis.xlen(stream)) / max(span_ms / 1000, 0.001)
    finally:
        await redis.aclose()


def projector_rows(
    total: int, rates: Sequence[float], rate: float, p99s: Sequence[float], p50s: Sequence[float],
    achieved: Sequence[float],
) -> list[Row]:  # fmt: skip
    return [
        Row("4 projector", "catch-up from a backlog", "events/s", list(rates), goal=CATCH_UP_TEXT,
            holds=median(rates) >= CATCH_UP_GOAL, note=f"{total:,} events, batches of 1000"),
        Row("4 projector", f"lag p99 at {rate:,.0f} events/s offered", "ms", list(p99s),
            note=f"p50 {median(p50s):.1f} ms, achieved ~{median(achieved):,.0f} events/s"),
    ]  # fmt: skip


def measure_projector(redis_url: str, workdir: Path) -> list[Row]:
    if not available("bench.projector_bench"):
        return projector_missing("bench/projector_bench.py (projector owner) not present")
    return guarded(projector_missing, lambda: asyncio.run(_projector(redis_url, workdir)))


# ---------------------------------------------------------------- row 5: recovery and cancel


RESUME_MARGIN_S = 0.5
RESUME_GOAL = f"<= lease + {RESUME_MARGIN_S} s"


def runner_missing(reason: str) -> list[Row]:
    return [
        not_measured("5 recovery", "SIGKILL → run resumed on another runner", "s", RESUME_GOAL, reason),
        not_measured("5 recovery", "LLM calls repeated after the kill", "calls", "0", reason),
        not_measured("5 cancel", "cancel: RunCancelled → confirmed, p99", "ms",
                     f"<= {CANCEL_P99_GOAL_MS:.0f} ms", reason),
    ]  # fmt: skip


async def _runner(redis_url: str, workdir: Path) -> list[Row]:
    from bench import runner_bench as rb

    resumes = [await asyncio.wait_for(rb.crash_resume(redis_url, workdir), 180) for _ in range(reps())]
    per_rep = 10 if quick() else 50
    cancels = [
        await asyncio.wait_for(rb.cancel_latencies(redis_url, workdir, per_rep), 180) for _ in range(reps())
    ]
    return runner_rows(resumes, cancels)


def runner_rows(resumes: Sequence[Any], cancels: Sequence[Sequence[float]]) -> list[Row]:
    lease = resumes[0].lease_s
    resume = [r.resume_s for r in resumes]
    repeated = [float(r.repeated_calls) for r in resumes]
    p99s = [percentile(list(c), 99) for c in cancels]
    p50 = median([percentile(list(c), 50) for c in cancels])
    finish = median([r.finish_s for r in resumes])
    return [
        Row("5 recovery", "SIGKILL → run resumed on another runner", "s", resume,
            goal=RESUME_GOAL, holds=median(resume) <= lease + RESUME_MARGIN_S,
            note=f"lease {lease:g} s; finished {finish:.1f} s after the kill"),
        Row("5 recovery", "LLM calls repeated after the kill", "calls", repeated, goal="0",
            holds=max(repeated) == 0),
        Row("5 cancel", "cancel: RunCancelled → confirmed, p99", "ms", p99s,
            goal=f"<= {CANCEL_P99_GOAL_MS:.0f} ms", holds=median(p99s) <= CANCEL_P99_GOAL_MS,
            note=f"p50 {p50:.1f} ms, {len(cancels[0])} runs mid-step per repetition"),
    ]  # fmt: skip


def measure_runner(redis_url: str, workdir: Path) -> list[Row]:
    if not available("bench.runner_bench"):
        return runner_missing("bench/runner_bench.py (runner owner) not present")
    return guarded(runner_missing, lambda: asyncio.run(_runner(redis_url, workdir)))
