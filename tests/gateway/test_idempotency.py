"""Idempotency-Key: the same key and body is the same run, also when requests race."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from redis.asyncio import Redis

from shared.keys import Keys
from tests.gateway.conftest import GatewayFactory
from tests.gateway.support import BODY, RUNS


async def test_repeat_returns_the_same_run_and_a_new_body_is_422(
    client: httpx.AsyncClient, redis: Redis, keys: Keys
) -> None:
    key = {"Idempotency-Key": "order-42"}
    first = await client.post(RUNS, json=BODY, headers=key)
    again = await client.post(RUNS, json={**BODY, "symbol": "aapl"}, headers=key)  # same once normalised
    assert first.status_code == 202 and again.status_code == 200
    assert again.json()["runId"] == first.json()["runId"]
    assert again.headers["location"] == first.headers["location"]
    other = await client.post(RUNS, json={**BODY, "symbol": "MSFT"}, headers=key)
    assert other.status_code == 422 and other.json()["field"] == "Idempotency-Key"
    assert await redis.xlen(keys.queue) == 1
    raw: Any = await redis.get(keys.idem("local", "order-42"))
    stored = raw.decode()
    assert stored.startswith(first.json()["runId"] + "|") and len(stored.split("|")[1]) == 64
    assert 0 < await redis.ttl(keys.idem("local", "order-42")) <= 24 * 3600


async def test_twenty_racing_posts_make_one_run(
    start_gateway: GatewayFactory, redis: Redis, keys: Keys
) -> None:
    gateway = await start_gateway(max_active_runs=1)
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
        answers = await asyncio.gather(
            *(http.post(RUNS, json=BODY, headers={"Idempotency-Key": "race"}) for _ in range(20))
        )
    assert sorted(a.status_code for a in answers) == [200] * 19 + [202]
    assert len({a.json()["runId"] for a in answers}) == 1
    assert await redis.xlen(keys.events) == 1 and await redis.xlen(keys.queue) == 1


async def test_bad_idempotency_key_is_422(client: httpx.AsyncClient) -> None:
    response = await client.post(RUNS, json=BODY, headers={"Idempotency-Key": "has space"})
    assert response.status_code == 422 and response.json()["field"] == "Idempotency-Key"
