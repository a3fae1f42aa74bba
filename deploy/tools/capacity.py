"""Measure what one run costs Redis: run the offline pipeline once against a local redis-server.

Usage: ``.venv/bin/python deploy/tools/capacity.py [--analysts market,news,...] [--json]``.
Writes events exactly as the services do (EventStore), then asks Redis for ``MEMORY USAGE``.
The numbers feed the capacity arithmetic in docs/runbook.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
from redis.asyncio import Redis

from services.runner.pipeline import Pipeline, PipelineSettings
from shared.catalog import plan_steps
from shared.events import EventCodec, RunCompleted, RunRequested, RunStarted, StepCompleted, StepProgress
from shared.events import StepStarted as StepStartedEvent
from shared.ids import new_run_id
from shared.keys import Keys
from shared.redis_io import connect
from shared.redis_server import RedisServer
from shared.results import StepOutput, Usage
from shared.store import EventStore

FENCE = "capacity-1"


@dataclass(frozen=True)
class Measurement:
    """What one completed run left in Redis."""

    redis_version: str
    steps: int
    events: int
    encoded_bytes: int
    run_stream_bytes: int
    global_log_bytes: int
    meta_bytes: int
    queue_entry_bytes: int

    @property
    def bytes_per_event(self) -> float:
        return self.run_stream_bytes / self.events


class StoreReporter:
    """A StepReporter writing fenced events, as the runner does."""

    def __init__(self, store: EventStore, run_id: str) -> None:
        self.store, self.run_id = store, run_id

    async def started(self, step: str, index: int) -> None:
        await self.store.append(StepStartedEvent(run_id=self.run_id, step=step, index=index), fence=FENCE)

    async def progress(self, step: str, fraction: float, message: str = "") -> None:
        event = StepProgress(run_id=self.run_id, step=step, progress=fraction, message=message)
        await self.store.append(event, fence=FENCE)

    async def completed(self, step: str, output: StepOutput | None, duration_s: float, usage: Usage) -> None:
        event = StepCompleted(
            run_id=self.run_id, step=step, output=output, duration_s=duration_s, usage=usage
        )
        await self.store.append(event, fence=FENCE)


async def one_run(redis: Redis, keys: Keys, analysts: tuple[str, ...]) -> str:
    """Submit, execute and complete one offline run; returns its id."""
    store = EventStore(redis, keys)
    run_id = new_run_id()
    request = RunRequested(
        run_id=run_id, user_id="capacity", symbol="AAPL", model_id="offline", analysts=analysts
    )
    await store.submit(request)
    steps = plan_steps(analysts)
    await store.append(RunStarted(run_id=run_id, runner_id="capacity", attempt=1, steps=steps), fence=FENCE)
    async with httpx.AsyncClient() as http:
        pipeline = Pipeline(PipelineSettings(keys=keys), redis, http, environ={})
        result = await pipeline.run(request, {}, StoreReporter(store, run_id))
    await store.append(RunCompleted(run_id=run_id, result=result), fence=FENCE)
    return run_id


async def memory(redis: Redis, key: str) -> int:
    return int(await redis.memory_usage(key, samples=0) or 0)


async def measure(url: str, version: str, analysts: tuple[str, ...]) -> Measurement:
    keys = Keys("cap:")
    redis = connect(url)
    try:
        run_id = await one_run(redis, keys, analysts)
        entries = await EventStore(redis, keys).read(run_id)
        codec = EventCodec()
        queue_bytes = await memory(redis, keys.queue)
        return Measurement(
            redis_version=version,
            steps=len(plan_steps(analysts)),
            events=len(entries),
            encoded_bytes=sum(len(codec.encode(event)) for _, event in entries),
            run_stream_bytes=await memory(redis, keys.run(run_id)),
            global_log_bytes=await memory(redis, keys.events),
            meta_bytes=await memory(redis, keys.meta(run_id)),
            queue_entry_bytes=queue_bytes,
        )
    finally:
        await redis.aclose()


def run(analysts: tuple[str, ...]) -> Measurement:
    """Start a throwaway redis-server, measure one run, stop the server."""
    with tempfile.TemporaryDirectory() as tmp, RedisServer(Path(tmp)) as server:
        return asyncio.run(measure(server.url, server.version(), analysts))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--analysts", default="market,fundamentals,news,sentiment,risk,invest")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = run(tuple(args.analysts.split(",")))
    doc = {**asdict(result), "bytes_per_event": round(result.bytes_per_event, 1)}
    if args.json:
        sys.stdout.write(json.dumps(doc) + "\n")
    else:
        sys.stdout.writelines(f"{key:<20} {value}\n" for key, value in doc.items())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
