"""Fault 8: a run stream trimmed while an SSE client is away (dropped as slow, or not yet there)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from shared.catalog import plan_steps
from tests.chaos.harness import Cluster
from tests.gateway.support import Runner, SseLog, read_sse, stream_ids
from tests.projector.support import log_head, wait_caught_up

EVENTS = "/api/trading/runs/{}/events"


@pytest.fixture
async def cluster(redis_url: str, tmp_path: Path) -> AsyncIterator[Cluster]:
    made = Cluster(redis_url, tmp_path)
    made.gateway(TT_SSE_QUEUE_SIZE="4")
    try:
        await made.start(made.projector, *made.gateways)
        yield made
    finally:
        await made.stop()


async def _read(url: str, last_id: str | None = None, stop_after: int | None = None) -> SseLog:
    log = SseLog()
    headers = {"Last-Event-ID": last_id} if last_id else {}
    async with httpx.AsyncClient(timeout=10) as http, http.stream("GET", url, headers=headers) as response:
        assert response.status_code == 200, await response.aread()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await read_sse(response, log, stop_after=stop_after)
    return log


async def _trimmed_run(cluster: Cluster) -> tuple[str, str]:
    """A run with two steps done, read by a client that then goes away; the stream is trimmed
    past the client's position, then the run ends. Returns (run id, the client's last ID)."""
    async with httpx.AsyncClient(base_url=cluster.gateways[0].url, timeout=10) as http:
        response = await http.post(
            "/api/trading/runs", json={"symbol": "AAPL", "analysts": ["market", "risk"], "join": False}
        )
    run_id = response.json()["runId"]
    runner = Runner(cluster.store)
    await runner.start(run_id)
    for index, step in enumerate(plan_steps(("market", "risk"))[:2]):
        await runner.step(run_id, step, index)
    seen = await _read(cluster.gateways[0].url + EVENTS.format(run_id), stop_after=3)
    head = await log_head(cluster.redis, cluster.keys.events)
    await asyncio.to_thread(wait_caught_up, cluster.projector.url, head)
    await cluster.redis.xtrim(cluster.keys.run(run_id), maxlen=2, approximate=False)
    for index, step in enumerate(plan_steps(("market", "risk"))[2:], start=2):
        await runner.step(run_id, step, index)
    await runner.complete(run_id)
    return run_id, seen.ids[-1]


def _assert_reset_then_contiguous(log: SseLog, retained: list[str], last_seen: str | None) -> None:
    assert log.events[0] == "reset", log.events[:3]
    snapshot = log.messages[0].data["state"]
    assert snapshot["runId"] and snapshot["symbol"] == "AAPL", snapshot
    position = _key(last_seen) if last_seen else (0, 0)
    assert log.ids == [i for i in retained if _key(i) > position], "every retained event after the position"
    assert log.events[-1] == "end"


def _key(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


async def test_a_client_resuming_past_a_trim_gets_an_explicit_reset_with_the_snapshot(
    cluster: Cluster,
) -> None:
    """A client that was cut (slow) resumes with a Last-Event-ID the trim removed: the first frame
    is ``reset`` carrying the run's state from the read model, then the retained events and the
    end; never a silent gap."""
    run_id, last_seen = await _trimmed_run(cluster)
    retained = stream_ids(await cluster.redis.xrange(cluster.keys.run(run_id)))
    log = await _read(cluster.gateways[0].url + EVENTS.format(run_id), last_id=last_seen)
    _assert_reset_then_contiguous(log, retained, last_seen)


async def test_a_new_client_of_a_trimmed_stream_gets_a_reset_not_a_silent_tail(cluster: Cluster) -> None:
    """A client arriving after the trim with no Last-Event-ID (a full replay from 0) is told the
    start is gone (``reset`` with the snapshot) before the retained events."""
    run_id, _ = await _trimmed_run(cluster)
    retained = stream_ids(await cluster.redis.xrange(cluster.keys.run(run_id)))
    log = await _read(cluster.gateways[0].url + EVENTS.format(run_id))
    _assert_reset_then_contiguous(log, retained, None)
