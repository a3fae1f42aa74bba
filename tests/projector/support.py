"""Writing runs through the real EventStore, and reading the projector's database back."""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import msgspec
from redis.asyncio import Redis

from shared.events import (
    AnyEvent,
    RunCancellationConfirmed,
    RunCancelled,
    RunCompleted,
    RunFailed,
    RunRequested,
    RunStarted,
    StepCompleted,
    StepProgress,
    StepStarted,
)
from shared.ids import new_run_id
from shared.keys import Keys
from shared.reducer import fold
from shared.results import Usage
from shared.run_state import RunState
from shared.store import EventStore

ENDINGS = ("completed", "failed", "cancelled", "running", "queued", "cancel-queued")
STEPS = ("data", "market", "final")


def plan(
    run_id: str, ending: str, *, user: str = "alice", symbol: str = "AAPL", at: datetime | None = None
) -> list[AnyEvent]:
    """The events of one run, in order, ending as ``ending`` says."""
    stamp = {"at": at} if at is not None else {}
    events: list[AnyEvent] = [
        RunRequested(
            run_id=run_id, user_id=user, symbol=symbol, model_id="offline", analysts=("market",), **stamp
        )
    ]
    if ending == "queued":
        return events
    if ending == "cancel-queued":
        return [*events, RunCancelled(run_id=run_id, user_id=user, **stamp)]
    events.append(RunStarted(run_id=run_id, runner_id="r1", attempt=1, steps=STEPS, **stamp))
    for index, step in enumerate(STEPS):
        events.append(StepStarted(run_id=run_id, step=step, index=index, **stamp))
        events.append(StepProgress(run_id=run_id, step=step, progress=0.5, message="half", **stamp))
        events.append(
            StepCompleted(
                run_id=run_id, step=step, duration_s=0.1, usage=Usage(calls=1, prompt_tokens=10), **stamp
            )
        )
    match ending:
        case "completed":
            events.append(RunCompleted(run_id=run_id, duration_s=1.0, **stamp))
        case "failed":
            events.append(RunFailed(run_id=run_id, code="boom", message="it broke", **stamp))
        case "cancelled":
            events.append(RunCancelled(run_id=run_id, user_id=user, **stamp))
            events.append(RunCancellationConfirmed(run_id=run_id, **stamp))
    return events


async def write(store: EventStore, event: AnyEvent) -> str:
    """Append one event the way gateway and runner do."""
    if isinstance(event, RunRequested):
        outcome = await store.submit(event)
        return str(getattr(outcome, "event_id", ""))
    return await store.append(event, fence="f1")


async def write_runs(store: EventStore, endings: Sequence[str], **kwargs: object) -> list[str]:
    """Write whole runs one after another; returns their ids."""
    run_ids = []
    for ending in endings:
        run_id = new_run_id()
        for event in plan(run_id, ending, **kwargs):  # type: ignore[arg-type]
            await write(store, event)
        run_ids.append(run_id)
    return run_ids


def db_states(db_path: Path, table: str = "runs") -> dict[str, RunState]:
    decoder = msgspec.json.Decoder(RunState)
    with sqlite3.connect(db_path) as db:
        rows = db.execute(f"SELECT run_id, state FROM {table}").fetchall()
    return {run_id: decoder.decode(state) for run_id, state in rows}


async def folded(store: EventStore, run_ids: Sequence[str]) -> dict[str, RunState]:
    return {run_id: fold(run_id, await store.read(run_id)) for run_id in run_ids}


def checksum(db_path: Path) -> str:
    """A digest of the read models' canonical content: every column of every table, by key."""
    digest = hashlib.sha256()
    with sqlite3.connect(db_path) as db:
        for table in ("runs", "runs_archive", "checkpoint"):
            columns = [row[1] for row in db.execute(f"PRAGMA table_xinfo({table})")]
            digest.update(f"{table}:{columns}".encode())
            for row in db.execute(f"SELECT * FROM {table} ORDER BY 1"):
                digest.update(repr(row).encode())
    return digest.hexdigest()


def wait_caught_up(url: str, last_id: str, timeout_s: float = 20.0) -> dict[str, object]:
    """Poll the projector's checkpoint until it reaches ``last_id`` (a global-log ID)."""
    deadline = time.monotonic() + timeout_s
    body: dict[str, object] = {}
    while time.monotonic() < deadline:
        body = httpx.get(f"{url}/internal/checkpoint", timeout=2).json()
        if _ge(str(body["last_id"]), last_id):
            return body
        time.sleep(0.05)
    raise TimeoutError(f"projector at {body} never reached {last_id}")


def _ge(a: str, b: str) -> bool:
    pa, pb = a.split("-"), b.split("-")
    return (int(pa[0]), int(pa[1])) >= (int(pb[0]), int(pb[1]))


async def log_head(redis: object, stream: str) -> str:
    entries = await redis.xrevrange(stream, count=1)  # type: ignore[attr-defined]
    return str(entries[0][0].decode()) if entries else "0-0"


async def until_caught_up(service: object, redis: object, stream: str, timeout_s: float = 15.0) -> None:
    """Wait until an in-process ProjectorService has applied the log's head."""
    import asyncio

    head = await log_head(redis, stream)
    deadline = time.monotonic() + timeout_s
    while not _ge(service.projection.checkpoint, head):  # type: ignore[attr-defined]
        if time.monotonic() > deadline:
            raise TimeoutError(f"projector stuck at {service.projection.checkpoint}, head {head}")  # type: ignore[attr-defined]
        await asyncio.sleep(0.02)


async def lose(redis: Redis, keys: Keys, run_id: str) -> None:
    """What a failover that lost the run's writes leaves: no meta hash, no run stream, no entry."""
    await redis.delete(keys.meta(run_id), keys.run(run_id))
    for queue in keys.queues:
        entries: Any = await redis.xrange(queue)
        for entry_id, fields in entries:
            if fields.get(b"r") == run_id.encode():
                await redis.xdel(queue, entry_id)


async def queued_ids(redis: Redis, keys: Keys) -> list[str]:
    """The run ids the work queues name, in order."""
    names = []
    for queue in keys.queues:
        entries: Any = await redis.xrange(queue)
        names += [fields[b"r"].decode() for _, fields in entries]
    return names
