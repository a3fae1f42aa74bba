"""The runner's own /healthz, /readyz and /metrics responder, over real sockets, and what a
process does when it cannot build its pipeline or bind its port."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from redis.asyncio import Redis

from services.runner import worker as worker_module
from services.runner.factory import FactoryError
from services.runner.health import HealthServer
from services.runner.worker import Worker
from shared.keys import Keys
from shared.redis_server import free_port
from shared.store import EventStore
from tests.runner.support import runner_settings, running_worker, submit, wait_state


@asynccontextmanager
async def _serving(ready: list[bool]) -> AsyncIterator[str]:
    port = free_port()
    server = HealthServer(lambda: {"runner_id": "r1", "executing": 2}, "127.0.0.1", port, lambda: ready[0])
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                break
            except OSError:
                await asyncio.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        await asyncio.wait_for(task, 5)


async def test_health_readiness_and_metrics_answer() -> None:
    ready = [False]
    async with _serving(ready) as url, httpx.AsyncClient(base_url=url, timeout=5) as http:
        health = await http.get("/healthz")
        assert health.status_code == 200
        assert health.json() == {"status": "ok", "runner_id": "r1", "executing": 2}
        assert (await http.get("/readyz")).status_code == 503
        ready[0] = True
        assert (await http.get("/readyz")).json() == {"status": "ready"}
        metrics = await http.get("/metrics")
        assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
        assert "python_info" in metrics.text or "process_" in metrics.text


async def test_unknown_routes_and_methods_are_problem_documents() -> None:
    async with _serving([True]) as url, httpx.AsyncClient(base_url=url, timeout=5) as http:
        missing = await http.get("/nope?x=1")
        assert missing.status_code == 404
        assert missing.headers["content-type"] == "application/problem+json"
        assert missing.json()["status"] == 404 and "/nope" in missing.json()["detail"]
        posted = await http.post("/healthz", content=b"{}")
        assert posted.status_code == 405 and posted.json()["title"] == "Method Not Allowed"


async def test_a_malformed_request_gets_400_and_the_server_keeps_answering() -> None:
    async with _serving([True]) as url:
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"garbage\r\n\r\n")
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 5)
        writer.close()
        assert status_line.startswith(b"HTTP/1.1 400")
        async with httpx.AsyncClient(base_url=url, timeout=5) as http:
            assert (await http.get("/healthz")).status_code == 200


async def test_a_pipeline_that_cannot_be_built_stops_the_worker_and_leaves_the_run_pending(
    redis_url: str, redis: Redis, keys: Keys
) -> None:
    store = EventStore(redis, keys)
    run_id = await submit(store)  # a run with steps: it needs the pipeline
    worker = Worker(runner_settings(redis_url, TT_RUNNER_PIPELINE="tests.runner.test_health:_broken"))
    with pytest.raises(RuntimeError, match="no model"):
        await asyncio.wait_for(worker.run(), 20)
    state = await store.state(run_id)
    assert state is not None and state.status == "pending"  # never started; its lease hands it on
    assert (await redis.xpending(keys.queue, "runners"))["pending"] == 1


async def test_a_pipeline_name_that_names_nothing_fails_at_start(redis_url: str) -> None:
    worker = Worker(runner_settings(redis_url, TT_RUNNER_PIPELINE="tests.runner.nowhere:build"))
    with pytest.raises(FactoryError, match="nowhere"):
        await asyncio.wait_for(worker.run(), 20)


def _broken(redis: Redis, http: httpx.AsyncClient) -> object:
    raise RuntimeError("no model configured")


async def test_healthz_says_when_the_idle_worker_has_built_its_pipeline(redis_url: str) -> None:
    port = free_port()
    worker = Worker(
        runner_settings(
            redis_url, TT_RUNNER_PORT=str(port), TT_RUNNER_PIPELINE="tests.runner.support:build_test_pipeline"
        )
    )
    assert worker._status()["pipeline"] == "not built"
    task = asyncio.create_task(worker.run())
    seen: list[str] = []
    try:
        await asyncio.wait_for(worker.ready.wait(), 10)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=2.0) as http:
            for _ in range(200):  # the queues are empty: the worker builds its pipeline now
                seen.append((await http.get("/healthz")).json()["pipeline"])
                if seen[-1] == "built":
                    break
                await asyncio.sleep(0.02)
        assert seen[-1] == "built" and set(seen) <= {"not built", "building", "built"}
        assert worker.pipeline is not None
    finally:
        worker.request_stop()
        await asyncio.wait_for(task, 30)


async def test_a_run_that_needs_the_pipeline_does_not_wait_for_the_idle_build(
    redis_url: str, redis: Redis, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(worker_module, "BUILD_AFTER_IDLE_S", 3600.0)  # idle build: never, here
    store = EventStore(redis, keys)
    async with running_worker(
        redis_url, TT_RUNNER_PIPELINE="tests.runner.support:build_test_pipeline"
    ) as worker:
        await asyncio.sleep(0.2)  # the queues ran dry: the idle build is waiting
        assert worker._status()["pipeline"] == "building" and worker.pipeline is None
        run_id = await submit(store)  # a run with steps: built on this need, at once
        state = await wait_state(store, run_id, timeout_s=20.0)
        assert state.status == "completed" and worker._status()["pipeline"] == "built"
