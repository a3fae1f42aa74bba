"""Fault 4: a gateway SIGKILLed under 100 SSE clients; they resume on a second gateway."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import httpx
import pytest

from tests.chaos.harness import Cluster, post_run, record
from tests.gateway.support import SseLog, read_sse, stream_ids

CLIENTS_PER_RUN = 20
RUNS = 5


async def _follow(http: httpx.AsyncClient, base: str, run_id: str, log: SseLog, last_id: str | None) -> None:
    headers = {"Last-Event-ID": last_id} if last_id else {}
    log.lines = None
    with contextlib.suppress(httpx.HTTPError):
        async with http.stream("GET", f"{base}/api/trading/runs/{run_id}/events", headers=headers) as r:
            assert r.status_code == 200, await r.aread()
            await read_sse(r, log)


async def _client(http: httpx.AsyncClient, first: str, second: str, run_id: str) -> tuple[SseLog, int]:
    """Follow on the first gateway until it dies, then resume on the second with Last-Event-ID;
    returns the log and how many messages came before the cut."""
    log = SseLog()
    await _follow(http, first, run_id, log, None)
    before = len(log.ids)
    if not log.events or log.events[-1] != "end":
        await _follow(http, second, run_id, log, log.ids[-1] if log.ids else None)
    return log, before


@pytest.mark.timeout(300)  # 100 clients connecting on two busy cores can take a while
async def test_sse_clients_of_a_killed_gateway_resume_exactly_once_on_another(
    redis_url: str, tmp_path: Path
) -> None:
    """100 clients follow 5 runs on gateway A; A is SIGKILLed mid-run; each client reconnects to
    gateway B with Last-Event-ID: every client's IDs equal the run stream's, once each, in order,
    ending with ``end``."""
    # 1 s steps: the runs must outlast 100 clients connecting on two busy cores, so the kill
    # lands mid-run for every client.
    cluster = Cluster(redis_url, tmp_path, step_delay_s=1.0)
    first, second = cluster.gateway(), cluster.gateway()
    try:
        await cluster.start(cluster.projector, cluster.runner("a"), cluster.runner("b"), first, second)
        limits = httpx.Limits(max_connections=300, max_keepalive_connections=0)
        timeout = httpx.Timeout(10.0, read=30.0)
        async with httpx.AsyncClient(limits=limits, timeout=timeout) as http:
            async with httpx.AsyncClient(base_url=first.url, timeout=10) as api:
                run_ids = [(await post_run(api, sym)).json()["runId"] for sym in ("A", "B", "C", "D", "E")]
            clients = [
                asyncio.create_task(_client(http, first.url, second.url, run_id))
                for run_id in run_ids
                for _ in range(CLIENTS_PER_RUN)
            ]
            await _until_listening(first.url, RUNS * CLIENTS_PER_RUN)
            await asyncio.sleep(1.5)  # a step or two in
            first.kill()
            killed = time.monotonic()
            results = await asyncio.wait_for(asyncio.gather(*clients), 120)
            done_s = time.monotonic() - killed
        cut_mid_run = 0
        for index, (log, before) in enumerate(results):
            run_id = run_ids[index // CLIENTS_PER_RUN]
            expected = stream_ids(await cluster.redis.xrange(cluster.keys.run(run_id)))
            assert log.ids == expected, (run_id, before, len(log.ids), len(expected))
            assert log.events[-1] == "end"
            cut_mid_run += 0 < before < len(expected)
        assert cut_mid_run == len(results), "the kill did not land mid-run for every client"
        record(
            "gateway_sigkill_sse",
            {"clients": len(results), "runs": RUNS, "resumed_on_second_gateway": cut_mid_run,
             "all_done_after_kill_s": round(done_s, 2)},
        )  # fmt: skip
    finally:
        await cluster.stop()


async def _until_listening(url: str, count: int, timeout_s: float = 90.0) -> None:
    """Wait until the gateway reports ``count`` open SSE connections on /metrics."""
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(timeout=5) as http:
        while time.monotonic() < deadline:
            text = (await http.get(f"{url}/metrics")).text
            for line in text.splitlines():
                if line.startswith("tickertape_sse_connections ") and float(line.split()[1]) >= count:
                    return
            await asyncio.sleep(0.1)
    raise AssertionError(f"{count} SSE clients never connected")
