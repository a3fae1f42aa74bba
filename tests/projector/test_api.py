"""The internal HTTP API, served by a real projector process over a real Redis."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import msgspec
from redis.asyncio import Redis

from shared.keys import Keys
from shared.store import EventStore
from tests.projector.support import folded, plan, wait_caught_up, write_runs
from tests.support.processes import ServiceProcess

MakeProcess = Callable[..., ServiceProcess]


async def _last_log_id(redis: Redis, keys: Keys) -> str:
    entries = await redis.xrevrange(keys.events, count=1)
    return entries[0][0].decode()


async def test_get_list_counts_and_checkpoint(redis: Redis, keys: Keys, make_process: MakeProcess) -> None:
    store = EventStore(redis, keys)
    done = await write_runs(store, ["completed", "failed", "completed"], symbol="AAPL")
    live = await write_runs(store, ["running", "queued"], symbol="MSFT")
    other = await write_runs(store, ["completed"], user="bob")
    projector = make_process().start()
    wait_caught_up(projector.url, await _last_log_id(redis, keys))
    expected = await folded(store, done + live)
    with httpx.Client(base_url=projector.url, timeout=5) as http:
        one = http.get(f"/internal/runs/{done[0]}", params={"user_id": "alice"})
        assert one.status_code == 200
        assert one.json()["status"] == "completed"
        assert one.content == msgspec.json.encode(expected[done[0]])
        hidden = http.get(f"/internal/runs/{other[0]}", params={"user_id": "alice"})
        assert hidden.status_code == 404
        assert hidden.headers["content-type"] == "application/problem+json"

        active = http.get("/internal/runs", params={"user_id": "alice", "status": "active"}).json()
        assert {r["run_id"] for r in active["runs"]} == set(live)
        assert active["next_cursor"] is None

        seen, cursor = [], None
        while True:
            params = {"user_id": "alice", "limit": 2, **({"cursor": cursor} if cursor else {})}
            page = http.get("/internal/runs", params=params).json()
            seen += [r["run_id"] for r in page["runs"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == list(reversed(done + live))  # newest first, every run once

        msft = http.get("/internal/runs", params={"user_id": "alice", "symbol": "MSFT", "status": "running"})
        assert [r["run_id"] for r in msft.json()["runs"]] == [live[0]]

        counts = http.get("/internal/counts", params={"user_id": "alice"}).json()
        assert counts == {
            "pending": 1,
            "running": 1,
            "completed": 2,
            "failed": 1,
            "timeout": 0,
            "cancelled": 0,
        }

        checkpoint = http.get("/internal/checkpoint").json()
        assert checkpoint == {"last_id": await _last_log_id(redis, keys), "lag": 0, "lag_seconds": 0.0}


async def test_bad_query_parameters_are_problems_not_500s(redis: Redis, make_process: MakeProcess) -> None:
    projector = make_process().start()
    bad = [
        ("/internal/runs", {"user_id": "alice", "status": "sleeping"}, "status"),
        ("/internal/runs", {"user_id": "alice", "limit": "0"}, "limit"),
        ("/internal/runs", {"user_id": "alice", "limit": "many"}, "limit"),
        ("/internal/runs", {"user_id": "alice", "cursor": "%%%not-base64"}, "cursor"),
        ("/internal/runs", {"user_id": "alice", "cursor": "bm90IGpzb24"}, "cursor"),
        ("/internal/runs", {}, "user_id"),
        ("/internal/counts", {}, "user_id"),
        ("/internal/runs/abc", {"user_id": ""}, "user_id"),
    ]
    with httpx.Client(base_url=projector.url, timeout=5) as http:
        for path, params, field in bad:
            response = http.get(path, params=params)
            assert response.status_code == 422, (path, params, response.text)
            assert response.headers["content-type"] == "application/problem+json"
            body = response.json()
            assert body["field"] == field
            assert {"type", "title", "status", "detail"} <= body.keys()


async def test_health_readiness_and_metrics(redis: Redis, keys: Keys, make_process: MakeProcess) -> None:
    store = EventStore(redis, keys)
    await write_runs(store, ["completed"])
    projector = make_process().start()
    wait_caught_up(projector.url, await _last_log_id(redis, keys))
    with httpx.Client(base_url=projector.url, timeout=5) as http:
        assert http.get("/healthz").status_code == 200
        assert http.get("/readyz").status_code == 200
        text = http.get("/metrics").text
    for name in (
        f"tickertape_projector_events_applied_total {float(len(plan('x', 'completed')))}",
        "tickertape_projector_batch_size_count",
        "tickertape_projector_lag_entries 0.0",
        "tickertape_projector_lag_seconds 0.0",
    ):
        assert name in text, name


async def test_sigterm_stops_the_projector_cleanly_within_its_grace(
    redis: Redis, keys: Keys, make_process: MakeProcess
) -> None:
    projector = make_process().start()
    await write_runs(EventStore(redis, keys), ["completed"])
    wait_caught_up(projector.url, await _last_log_id(redis, keys))
    started = time.monotonic()
    assert projector.stop() == 0
    assert time.monotonic() - started < 6
    assert "projector stopped" in projector.log_path.read_text()
