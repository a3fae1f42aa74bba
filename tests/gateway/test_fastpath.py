"""The submit front door (``fastpath.serve_submit``) answers exactly as the FastAPI route does.

Two real servers over the same Redis: the gateway as shipped (``Gateway`` hands ``POST /runs`` to
the front door) and the same app entered through ``FastAPI.__call__`` (the route, its
dependencies and the middleware stack). Every request below goes to both; status, headers that
matter and problem bodies must match.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from redis.asyncio import Redis
from starlette.types import Receive, Scope, Send

from services.gateway.app import create_app
from services.gateway.server import uvicorn_config
from shared.redis_server import free_port
from tests.gateway.conftest import GatewayFactory, make_settings

TOKEN = "fast-path-token"
JSON = {"Content-Type": "application/json"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
AUTH = {"Authorization": f"Bearer {TOKEN}"}
GOOD = {"symbol": "AAPL", "analysts": ["market"], "pipeline": "noop"}


def settings_overrides() -> dict[str, Any]:
    tokens = {hashlib.sha256(TOKEN.encode()).hexdigest(): "alice"}
    return {"auth": True, "api_tokens": tokens, "high_priority_users": frozenset(), "max_body_bytes": 512}


@pytest.fixture
async def both(
    start_gateway: GatewayFactory, redis: Redis, redis_url: str, state_dir: Path
) -> AsyncIterator[tuple[str, str]]:
    front = await start_gateway(**settings_overrides())
    app = create_app(make_settings(redis_url, state_dir, **settings_overrides()))

    async def route_only(scope: Scope, receive: Receive, send: Send) -> None:
        await FastAPI.__call__(app, scope, receive, send)

    config = uvicorn_config(route_only, "127.0.0.1", app_port := free_port(), lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    async with asyncio.timeout(10):
        while not server.started:
            assert not task.done(), "the route-only server did not start"
            await asyncio.sleep(0.01)
    try:
        yield front.url, f"http://127.0.0.1:{app_port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


CASES: dict[str, dict[str, Any]] = {
    "no credentials": {"json": GOOD, "headers": {}},
    "a wrong token": {"json": GOOD, "headers": {"Authorization": "Bearer nope"}},
    "not JSON": {"content": b"{nope", "headers": {**AUTH, **JSON}},
    "a form body": {"content": b"symbol=AAPL", "headers": {**AUTH, **FORM}},
    "a missing symbol": {"json": {"analysts": ["market"]}, "headers": AUTH},
    "an unknown field": {"json": {**GOOD, "colour": "red"}, "headers": AUTH},
    "a bad symbol": {"json": {**GOOD, "symbol": ".."}, "headers": AUTH},
    "an unknown analyst": {"json": {**GOOD, "analysts": ["astrologer"]}, "headers": AUTH},
    "an unknown model": {"json": {**GOOD, "modelId": "gpt-9"}, "headers": AUTH},
    "high priority unasked": {"json": {**GOOD, "priority": "high"}, "headers": AUTH},
    "a bad Idempotency-Key": {"json": GOOD, "headers": {**AUTH, "Idempotency-Key": "has space"}},
    "a body over the limit": {"content": b"{" + b" " * 600 + b"}", "headers": {**AUTH, **JSON}},
}  # fmt: skip


def comparable(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    return {
        "status": response.status_code,
        "content-type": response.headers.get("content-type"),
        "www-authenticate": response.headers.get("www-authenticate"),
        "body": body,
    }


@pytest.mark.parametrize("case", list(CASES))
async def test_bad_requests_get_the_same_problem_from_both(both: tuple[str, str], case: str) -> None:
    front, route = both
    async with httpx.AsyncClient(timeout=10) as http:
        answers = [
            comparable(await http.post(f"{base}/api/trading/runs", **CASES[case])) for base in (front, route)
        ]
    assert answers[0]["status"] >= 400
    assert answers[0]["content-type"] == "application/problem+json"
    assert answers[0] == answers[1], json.dumps(answers, indent=1)


@pytest.mark.parametrize("path", ["/api/trading/runs", "/api/trading/decision/runs"])
async def test_a_good_request_is_accepted_alike_and_repeats_by_key(both: tuple[str, str], path: str) -> None:
    front, route = both
    async with httpx.AsyncClient(timeout=10) as http:
        for base in (front, route):
            key = {"Idempotency-Key": f"k-{base}-{path}"}
            first = await http.post(f"{base}{path}", json=GOOD, headers={**AUTH, **key})
            again = await http.post(f"{base}{path}", json=GOOD, headers={**AUTH, **key})
            assert first.status_code == 202 and again.status_code == 200
            assert first.json() == {"runId": first.json()["runId"], "status": "pending"}
            assert again.json()["runId"] == first.json()["runId"]
            assert first.headers["location"] == f"{path}/{first.json()['runId']}"
            changed = await http.post(
                f"{base}{path}", json={**GOOD, "symbol": "MSFT"}, headers={**AUTH, **key}
            )
            assert changed.status_code == 422 and changed.json()["field"] == "Idempotency-Key"
