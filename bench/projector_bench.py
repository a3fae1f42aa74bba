"""Projector throughput and lag: ``.venv/bin/python -m bench.projector_bench [--reps N] [--compare REF]``.

Catch-up: events/s applied from a backlog (default 100,000 global-log entries) by the real
consumer loop and projection, each repetition in a fresh process (as a restarted projector),
with its CPU time per event. ``--compare REF`` runs the same catch-up with the code of a git
revision (exported with ``git archive``), alternating with the working tree's, so before and after
share the machine and its load. Steady state: a real projector process while events arrive at a
given rate; lag p50/p99 from append to "checkpoint covers it". Prints a table; never a pass/fail.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import itertools
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from redis.asyncio import Redis

from bench.common import export
from services.projector.consumer import Consumer
from services.projector.db import open_db
from services.projector.projection import Projection
from services.projector.schema import migrate
from services.projector.service import tune_gc
from shared.events import AnyEvent, EventCodec
from shared.ids import new_run_id
from shared.keys import Keys
from shared.redis_io import connect
from shared.redis_server import RedisServer, free_port
from tests.projector.support import plan
from tests.support.processes import ServiceProcess

KEYS = Keys("bench:")
STEADY_TICK_S = 0.002
"""How often the steady load appends the events due (a few per tick at 2,000 events/s)."""


def events(total: int, concurrent: int = 50, seed: int = 7) -> Iterator[AnyEvent]:
    """Runs of ~12 events each, ``concurrent`` of them interleaved at a time, until ``total``."""
    rng = random.Random(seed)
    live: list[list[AnyEvent]] = []
    produced = 0
    while produced < total:
        while len(live) < concurrent:
            live.append(plan(new_run_id(), rng.choice(("completed", "completed", "failed", "cancelled"))))
        run = rng.choice(live)
        yield run.pop(0)
        produced += 1
        if not run:
            live.remove(run)


async def append_raw(redis: Redis, batch: list[AnyEvent], codec: EventCodec) -> list[str]:
    """What the append script does (run stream, then log with e/r/s), pipelined for speed."""
    pipe = redis.pipeline(transaction=False)
    for event in batch:
        pipe.xadd(KEYS.run(event.run_id), {"e": codec.encode(event)})
    run_ids = await pipe.execute()
    pipe = redis.pipeline(transaction=False)
    for event, source in zip(batch, run_ids, strict=True):
        pipe.xadd(KEYS.events, {"e": codec.encode(event), "r": event.run_id, "s": source})
    return [i.decode() for i in await pipe.execute()]


async def fill(url: str, total: int) -> None:
    """A backlog of ``total`` global-log entries (and their run streams)."""
    redis = connect(url)
    await redis.flushdb()
    codec, chunk = EventCodec(), []
    for event in events(total):
        chunk.append(event)
        if len(chunk) == 2000:
            await append_raw(redis, chunk, codec)
            chunk = []
    if chunk:
        await append_raw(redis, chunk, codec)
    await redis.aclose()


async def catch_up(url: str, total: int, batch_size: int, workdir: Path) -> tuple[float, float]:
    """Apply the backlog through the projector's own consumer loop and projection; (events/s, s).

    The clock runs from the loop's start until the checkpoint covers the log's head. The garbage
    collector is tuned as the projector's process tunes it, and restored afterwards.
    """
    thresholds = gc.get_threshold()
    tune_gc()
    try:
        return await _catch_up(url, total, batch_size, workdir)
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


async def _catch_up(url: str, total: int, batch_size: int, workdir: Path) -> tuple[float, float]:
    redis, reader = connect(url), connect(url, blocking=True)
    db_path = workdir / f"catchup-{time.monotonic_ns()}.db"
    migrate(db_path)
    db = await open_db(db_path)
    projection = Projection(db)
    await projection.load()
    consumer = Consumer(
        projection, redis, reader, KEYS, consumer="bench", batch_size=batch_size,
        batch_max=8 * batch_size, batch_wait_ms=50, lock=asyncio.Lock(),
    )  # fmt: skip
    await consumer.prepare()
    tail: Any = await redis.xrevrange(KEYS.events, count=1)
    head = tail[0][0].decode()
    stop = asyncio.Event()
    started = time.perf_counter()
    loop = asyncio.ensure_future(consumer.run(stop))
    try:
        while _id(projection.checkpoint) < _id(head):
            await asyncio.sleep(0.002)
        elapsed = time.perf_counter() - started
    finally:
        stop.set()
        await loop
        await db.close()
        await redis.aclose()
        await reader.aclose()
    return total / elapsed, elapsed


async def steady(url: str, rate: float, seconds: float, workdir: Path) -> list[float]:
    redis = connect(url)
    await redis.flushdb()
    env = {
        "REDIS_URL": url, "TT_PREFIX": KEYS.prefix, "TT_STATE_DIR": str(workdir / "steady"),
        "TT_PROJECTOR_BATCH_WAIT_MS": "1000", "TT_SNAPSHOT_INTERVAL_S": "0", "TT_RETENTION_INTERVAL_S": "0",
        "TT_LOG_LEVEL": "WARNING",
    }  # fmt: skip
    lags: list[float] = []
    with ServiceProcess("projector", env, port=free_port(), log_dir=workdir) as projector:
        written: dict[str, float] = {}
        poller = asyncio.ensure_future(_poll(projector.url, written, lags))
        total = int(rate * seconds) + 1
        codec, source = EventCodec(), iter(events(total))
        sent, began = 0, time.perf_counter()
        try:
            # Every tick appends the events due by then (one pipeline), so the offered rate holds
            # even when one round trip takes longer than 1/rate; each is stamped when appended.
            while sent < total:
                due = min(total, int((time.perf_counter() - began) * rate) + 1)
                batch = list(itertools.islice(source, due - sent))
                if batch:
                    ids = await append_raw(redis, batch, codec)
                    now = time.perf_counter()
                    written.update(dict.fromkeys(ids, now))
                    sent += len(batch)
                await asyncio.sleep(STEADY_TICK_S)
            await asyncio.sleep(1.0)
        finally:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
    await redis.aclose()
    return lags


async def _poll(url: str, written: dict[str, float], lags: list[float]) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=2) as http:
        while True:
            last = (await http.get("/internal/checkpoint")).json()["last_id"]
            now, key = time.perf_counter(), _id(last)
            for log_id in [i for i in written if _id(i) <= key]:
                lags.append(now - written.pop(log_id))
            await asyncio.sleep(0.005)


def _id(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


def _pct(values: list[float], p: float) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[int(p) - 1]


_ONE_CATCH_UP = """
import asyncio, json, sys, time
from pathlib import Path
from bench.projector_bench import catch_up
url, total, batch, workdir = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
cpu = time.process_time()
rate, elapsed = asyncio.run(catch_up(url, total, batch, workdir))
print(json.dumps({"rate": rate, "elapsed": elapsed, "cpu_s": time.process_time() - cpu}))
"""


def catch_up_process(root: Path, url: str, total: int, batch: int, workdir: Path) -> dict[str, float]:
    """One catch-up in a fresh process running the code under ``root``."""
    workdir.mkdir(parents=True, exist_ok=True)
    args = [sys.executable, "-c", _ONE_CATCH_UP, url, str(total), str(batch), str(workdir)]
    env = {**os.environ, "PYTHONPATH": str(root)}
    done = subprocess.run(args, cwd=root, env=env, capture_output=True, text=True, timeout=600, check=True)
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _spread(values: list[float], fmt: str) -> str:
    return f"{statistics.median(values):{fmt}} [{min(values):{fmt}} .. {max(values):{fmt}}]"


def _catch_up_table(results: dict[str, list[dict[str, float]]], total: int) -> None:
    print(f"{'catch-up (median [min .. max])':<28}{'events/s':>26}{'CPU µs/event':>26}")
    for name, runs in results.items():
        rates = [r["rate"] for r in runs]
        cpu = [r["cpu_s"] / total * 1e6 for r in runs]
        print(f"{name:<28}{_spread(rates, ',.0f'):>26}{_spread(cpu, '.1f'):>26}")


async def main(args: argparse.Namespace) -> None:
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="tt-bench-") as tmp:
        workdir = Path(tmp)
        variants = {"working tree": Path(__file__).resolve().parents[1]}
        if args.compare:
            variants = {args.compare: export(args.compare, workdir / "ref"), **variants}
        results: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
        with contextlib.ExitStack() as stack:
            url = args.redis_url or stack.enter_context(RedisServer(workdir / "redis")).url
            await fill(url, args.events)
            for rep in range(args.reps):
                for index, (name, root) in enumerate(variants.items()):
                    where = workdir / f"catchup-{rep}-{index}"
                    results[name].append(catch_up_process(root, url, args.events, args.batch, where))
            lags = await steady(url, args.rate, args.seconds, workdir) if args.seconds > 0 else []
    load_after = os.getloadavg()
    print(f"backlog {args.events:,} events, base batch {args.batch:,}, {args.reps} repetitions, alternating")
    _catch_up_table(results, args.events)
    print(f"load average (1/5/15 min) before {load_before}, after {tuple(round(x, 2) for x in load_after)}")
    if lags:
        print(f"steady {args.rate:,.0f} events/s for {args.seconds:.0f} s: {len(lags):,} events, "
              f"lag p50 {_pct(lags, 50) * 1000:.1f} ms, p99 {_pct(lags, 99) * 1000:.1f} ms")  # fmt: skip


def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.projector_bench")
    parser.add_argument("--events", type=int, default=100_000, help="catch-up backlog size")
    parser.add_argument("--batch", type=int, default=1000, help="XREADGROUP COUNT per batch")
    parser.add_argument("--rate", type=float, default=200.0, help="steady-state events per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="steady-state duration")
    parser.add_argument("--redis-url", default=None, help="use this Redis instead of starting one")
    parser.add_argument("--reps", type=int, default=3, help="catch-up repetitions (median, min, max)")
    parser.add_argument("--compare", default=None, help="also catch up with this git revision's code")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(_args()))
