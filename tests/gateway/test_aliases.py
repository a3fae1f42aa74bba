"""The older blueprints' paths, catalog routes, health and metrics."""

from __future__ import annotations

import asyncio
import os
from datetime import datetime
from typing import Any

import httpx

from shared.events import StepStarted
from tests.gateway.conftest import GatewayFactory
from tests.gateway.support import BODY, Runner

API = "/api/trading"


async def test_polling_blueprint_shapes(client: httpx.AsyncClient, runner: Runner) -> None:
    posted = await client.post(f"{API}/run", json=BODY)
    assert posted.status_code == 202
    run_id = posted.json()["runId"]
    pending = (await client.get(f"{API}/progress/{run_id}")).json()
    assert set(pending) == {"runId", "status", "progress", "currentStep", "currentStepId", "steps",
                            "startedAt", "estimatedTimeRemaining"}  # fmt: skip
    assert pending["steps"][0] == {"id": "data_collection", "name": "Data Collection", "status": "pending",
                                   "progress": 0.0}  # fmt: skip
    assert pending["currentStep"] == "Waiting to start..." and pending["currentStepId"] is None
    await runner.start(run_id)
    await runner.step(run_id, "data_collection", 0)
    await runner.store.append(StepStarted(run_id=run_id, step="analyst:risk", index=2), fence="f1")
    running = (await client.get(f"{API}/progress/{run_id}")).json()
    assert running["currentStep"] == "Running Risk Analyst..." and running["currentStepId"] == "analyst:risk"
    await runner.run_all_steps(run_id)
    await runner.complete(run_id)
    done = (await client.get(f"{API}/progress/{run_id}")).json()
    assert done["status"] == "completed" and done["progress"] == 100.0
    assert done["result"]["decision"] == "BUY" and done["completedAt"]
    took = datetime.fromisoformat(done["completedAt"]) - datetime.fromisoformat(done["startedAt"])
    assert isinstance(done["duration"], int)
    assert abs(done["duration"] - took.total_seconds() * 1000) <= 1  # milliseconds
    failed_id = (await client.post(f"{API}/run", json=BODY)).json()["runId"]
    await runner.start(failed_id)
    await runner.fail(failed_id)
    failed = (await client.get(f"{API}/progress/{failed_id}")).json()
    assert failed["status"] == "failed" and failed["error"] == "it broke" and "result" not in failed
    cancel_id = (await client.post(f"{API}/run", json=BODY)).json()["runId"]
    cancelled = await client.post(f"{API}/cancel/{cancel_id}")
    assert cancelled.status_code == 202 and cancelled.json()["status"] == "cancelled"


async def test_progress_answers_304_to_its_etag_until_the_run_moves(
    client: httpx.AsyncClient, runner: Runner
) -> None:
    run_id = (await client.post(f"{API}/run", json=BODY)).json()["runId"]
    first = await client.get(f"{API}/progress/{run_id}")
    etag = first.headers["etag"]
    same = await client.get(f"{API}/progress/{run_id}", headers={"If-None-Match": etag})
    assert same.status_code == 304 and same.headers["etag"] == etag and not same.content
    await runner.start(run_id)
    moved = await client.get(f"{API}/progress/{run_id}", headers={"If-None-Match": etag})
    assert moved.status_code == 200 and moved.headers["etag"] != etag and moved.json()["status"] == "running"


async def test_decision_runs_prefix_serves_the_same_routes(client: httpx.AsyncClient, runner: Runner) -> None:
    posted = await client.post(f"{API}/decision/runs", json=BODY)
    assert posted.status_code == 202
    run_id = posted.json()["runId"]
    assert posted.headers["location"] == f"{API}/decision/runs/{run_id}"
    assert (await client.get(f"{API}/decision/runs/{run_id}")).json()["runId"] == run_id
    assert (await client.delete(f"{API}/decision/runs/{run_id}")).status_code == 202


async def test_synchronous_decision_answers_the_result_or_202(
    client: httpx.AsyncClient, runner: Runner
) -> None:
    slow = await client.post(f"{API}/decision/internal", json=BODY, params={"wait": 0.3})
    assert slow.status_code == 202 and slow.json()["status"] == "pending"

    async def run_when_submitted() -> None:
        async with asyncio.timeout(5):
            while True:
                runs: Any = await runner.store.redis.xrange(runner.store.keys.queue)
                if len(runs) == 2:
                    await runner.run_all(runs[-1][1][b"r"].decode())
                    return
                await asyncio.sleep(0.02)

    worker = asyncio.create_task(run_when_submitted())
    fast = await client.post(f"{API}/decision/internal", json=BODY, params={"wait": 10})
    await worker
    assert fast.status_code == 200
    assert fast.json()["status"] == "completed" and fast.json()["result"]["decision"] == "BUY"


async def test_catalog_health_and_metrics(client: httpx.AsyncClient) -> None:
    models = (await client.get(f"{API}/models")).json()["models"]
    assert models[0]["id"] == "offline" and models[0]["default"] is True
    assert {"id", "label", "provider", "promptUsdPerM", "completionUsdPerM"} <= set(models[0])
    analysts = (await client.get(f"{API}/analysts")).json()["analysts"]
    assert [a["id"] for a in analysts][:2] == ["market", "fundamentals"]
    health = (await client.get("/healthz")).json()
    assert health == {"status": "ok", "pid": os.getpid(), "worker": os.getpid()}  # one process: both
    ready = await client.get("/readyz")  # no projector here: reported, and ready all the same
    assert ready.status_code == 200 and ready.json()["checks"] == {"redis": True}
    assert [p["healthy"] for p in ready.json()["projectors"]] == [False]
    await client.post(f"{API}/runs", json=BODY)
    text = (await client.get("/metrics")).text
    for name in ("tickertape_runs_submitted_total", "tickertape_http_requests_total",
                 "tickertape_http_request_duration_seconds", "tickertape_sse_connections",
                 "tickertape_sse_dropped_total"):  # fmt: skip
        assert name in text
    assert 'route="/api/trading/runs"' in text
    page = await client.get("/")
    assert page.status_code == 200 and "html" in page.headers["content-type"]
    assert (await client.get("/static/../settings.py")).status_code == 404
    docs = await client.get("/openapi.json")
    assert "/api/trading/runs/{run_id}/events" in docs.json()["paths"]


async def test_unknown_route_and_method_are_problems(client: httpx.AsyncClient) -> None:
    missing = await client.get("/api/trading/nope")
    assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"
    wrong = await client.put(f"{API}/runs")
    assert wrong.status_code == 405 and wrong.json()["status"] == 405


async def test_healthz_does_not_need_redis(start_gateway: GatewayFactory) -> None:
    from tests.gateway.conftest import RunningGateway, make_settings

    settings = make_settings("redis://127.0.0.1:1/0", (await start_gateway()).settings.common.state_dir)
    gateway = await RunningGateway(settings).start()
    try:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
            assert (await http.get("/healthz")).status_code == 200
            assert (await http.get("/readyz")).status_code == 503
    finally:
        await gateway.stop()
