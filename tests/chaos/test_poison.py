"""Fault 9: poison entries and newer/unknown event versions in every stream, under live services."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx

from shared.keys import EVENT_FIELD, RUN_ID_FIELD, SOURCE_ID_FIELD
from tests.chaos.harness import Cluster, post_run, record
from tests.gateway.support import SseLog, read_sse

GARBAGE = b"\xff\xfe not an event"
UNKNOWN_TYPE = json.dumps({"type": "RunPaused", "v": 9, "run_id": "x", "at": "2030-01-01T00:00:00Z"})


def _future_progress(run_id: str) -> str:
    """A StepProgress written by a newer build: higher version, a field this build does not know."""
    return json.dumps({
        "type": "StepProgress", "v": 2, "run_id": run_id, "at": "2030-01-01T00:00:00Z",
        "step": "data_collection", "progress": 0.5, "message": "from the future", "hint": {"x": 1},
    })  # fmt: skip


def _metric(text: str, name: str) -> float:
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


async def test_poison_in_every_stream_is_skipped_counted_dead_lettered_and_crashes_nothing(
    redis_url: str, tmp_path: Path
) -> None:
    """Garbage, unknown types and newer versions in the queues, the global log and a run stream:
    every process stays up, poison queue entries are dead-lettered with a reason, the projector
    counts what it skipped, a newer-version event is applied, and good runs (including the one
    whose stream holds the poison) complete and stream to an SSE client up to ``end``."""
    cluster = Cluster(redis_url, tmp_path, step_delay_s=0.2)
    gateway, runner = cluster.gateway(), cluster.runner("r")
    k, r = cluster.keys, cluster.redis
    try:
        await cluster.start(cluster.projector, runner, gateway)
        async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
            victim = (await post_run(http)).json()["runId"]
            await r.xadd(k.queue, {"junk": GARBAGE})
            await r.xadd(k.queue, {RUN_ID_FIELD: "0" * 36})
            await r.xadd(k.queue_high, {RUN_ID_FIELD: GARBAGE})
            poison: list[dict[Any, Any]] = [
                {EVENT_FIELD: GARBAGE},
                {EVENT_FIELD: UNKNOWN_TYPE},
                {"no": "event"},
            ]
            for fields in poison:
                await r.xadd(k.events, {**fields, RUN_ID_FIELD: victim})
            for data in (GARBAGE, UNKNOWN_TYPE, _future_progress(victim)):
                source = await r.xadd(k.run(victim), {EVENT_FIELD: data})
                await r.xadd(k.events, {EVENT_FIELD: data, RUN_ID_FIELD: victim, SOURCE_ID_FIELD: source})
            good = [(await post_run(http, symbol)).json()["runId"] for symbol in ("MSFT", "NVDA")]
            log = SseLog()
            async with asyncio.timeout(60), http.stream("GET", f"/api/trading/runs/{victim}/events") as resp:
                await read_sse(resp, log)
            states = await cluster.wait_terminal([victim, *good])
            assert {s.status for s in states.values()} == {"completed"}, states
            assert log.events[-1] == "end" and "StepProgress" in log.events
            await cluster.assert_read_model_is_the_fold([victim, *good])
            projector_metrics = (await http.get(f"{cluster.projector.url}/metrics")).text
        dead = await _until_deadlettered(cluster, 3)
        skipped = {
            reason: _metric(
                projector_metrics, f'tickertape_projector_events_skipped_total{{reason="{reason}"}}'
            )
            for reason in ("malformed", "unknown")
        }
        assert skipped == {"malformed": 3, "unknown": 2}, skipped  # the newer StepProgress was applied
        assert all(
            p.process is not None and p.process.poll() is None for p in (cluster.projector, runner, gateway)
        )
        record("poison", {"deadlettered": sorted(dead), "projector_skipped": skipped})
    finally:
        await cluster.stop()


async def _until_deadlettered(cluster: Cluster, count: int, timeout_s: float = 20.0) -> list[str]:
    deadline = time.monotonic() + timeout_s
    while True:
        entries: Any = await cluster.redis.xrange(cluster.keys.deadletter)
        reasons = [fields[b"reason"].decode() for _, fields in entries]
        if len(reasons) >= count or time.monotonic() > deadline:
            assert len(reasons) == count, reasons
            return reasons
        await asyncio.sleep(0.1)
