"""Projector throughput and lag: ``.venv/bin/python -m bench.projector_bench [--events N] [--rate R]``.

Catch-up: events/s applied from a backlog (default 100,000 global-log entries), in process.
Steady state: a real projector process while events arrive at a given rate; lag p50/p99 from
append to "checkpoint covers it". Prints a table; never a pass/fail.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
from redis.asyncio import Redis

from services.projector.consumer import Consumer
from services.projector.projection import Projection, open_db
from services.projector.schema import migrate
from shared.events import AnyEvent, EventCodec
from shared.ids import new_run_id
from shared.keys import Keys
from shared.redis_io import connect
from shared.redis_server import RedisServer, free_port
from tests.projector.support import plan
from tests.support.processes import ServiceProcess

KEYS = Keys("bench:")


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
    """Apply the backlog through the projector's own consumer and projection; (events/s, s)."""
    redis, reader = connect(url), connect(url, blocking=True)
    db_path = workdir / "catchup.db"
    migrate(db_path)
    db = await open_db(db_path)
    projection = Projection(db)
    await projection.load()
    consumer = Consumer(
        projection, redis, reader, KEYS, consumer="bench", batch_size=batch_size, batch_wait_ms=50,
        lock=asyncio.Lock(),
    )  # fmt: skip
    await consumer.prepare()
    started, applied, position = time.perf_counter(), 0, ">"
    while applied < total:
        reply = await reader.xreadgroup("projector", "bench", {KEYS.events: position}, count=batch_size)
        outcome = await consumer.handle(list(reply[0][1]))
        applied += outcome.applied + sum(outcome.skipped.values())
    elapsed = time.perf_counter() - started
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
        codec, source, interval = EventCodec(), events(int(rate * seconds) + 1), 1.0 / rate
        next_at = time.perf_counter()
        try:
            for event in source:
                [log_id] = await append_raw(redis, [event], codec)
                written[log_id] = time.perf_counter()
                next_at += interval
                await asyncio.sleep(max(next_at - time.perf_counter(), 0))
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


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="tt-bench-") as tmp:
        workdir = Path(tmp)
        with contextlib.ExitStack() as stack:
            url = args.redis_url or stack.enter_context(RedisServer(workdir / "redis")).url
            await fill(url, args.events)
            rate_s, elapsed = await catch_up(url, args.events, args.batch, workdir)
            lags = await steady(url, args.rate, args.seconds, workdir)
    print(f"{'measure':<34}{'value':>14}")
    print("-" * 48)
    print(f"{'catch-up backlog (events)':<34}{args.events:>14,}")
    print(f"{'catch-up batch size':<34}{args.batch:>14,}")
    print(f"{'catch-up time (s)':<34}{elapsed:>14.2f}")
    print(f"{'catch-up throughput (events/s)':<34}{rate_s:>14,.0f}")
    print(f"{'steady rate (events/s)':<34}{args.rate:>14,.0f}")
    print(f"{'steady events measured':<34}{len(lags):>14,}")
    print(f"{'steady lag p50 (ms)':<34}{_pct(lags, 50) * 1000:>14.1f}")
    print(f"{'steady lag p99 (ms)':<34}{_pct(lags, 99) * 1000:>14.1f}")


def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.projector_bench")
    parser.add_argument("--events", type=int, default=100_000, help="catch-up backlog size")
    parser.add_argument("--batch", type=int, default=1000, help="XREADGROUP COUNT per batch")
    parser.add_argument("--rate", type=float, default=200.0, help="steady-state events per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="steady-state duration")
    parser.add_argument("--redis-url", default=None, help="use this Redis instead of starting one")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(_args()))
