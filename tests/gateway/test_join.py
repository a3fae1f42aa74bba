"""Join instead of duplicate: an identical submit answers the caller's pending or running run."""

from __future__ import annotations

import asyncio

import httpx
from redis.asyncio import Redis

from shared.events import RunCompleted, RunStarted
from shared.keys import Keys
from shared.store import EventStore
from tests.gateway.conftest import GatewayFactory
from tests.gateway.support import RUNS

BODY = {"symbol": "AAPL", "analysts": ["market", "risk"]}
"""``join`` left to its default (true); tests.gateway.support's BODY says false."""


async def test_racing_identical_submits_make_one_run(
    start_gateway: GatewayFactory, redis: Redis, keys: Keys
) -> None:
    gateway = await start_gateway(max_active_runs=1)  # a second run would be refused: joins are not runs
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
        answers = await asyncio.gather(*(http.post(RUNS, json=BODY) for _ in range(10)))
    assert sorted(a.status_code for a in answers) == [200] * 9 + [202]
    assert len({a.json()["runId"] for a in answers}) == 1
    assert [a.json().get("joined") for a in answers].count(True) == 9
    assert all(a.headers["location"].endswith(a.json()["runId"]) for a in answers)
    assert await redis.xlen(keys.events) == 1 and await redis.xlen(keys.queue) == 1


async def test_join_false_and_other_options_start_new_runs(
    client: httpx.AsyncClient, redis: Redis, keys: Keys
) -> None:
    first = await client.post(RUNS, json=BODY)
    unjoined = await client.post(RUNS, json={**BODY, "join": False})
    other = await client.post(RUNS, json={**BODY, "debateRounds": 2})
    reordered = await client.post(RUNS, json={**BODY, "analysts": list(reversed(BODY["analysts"]))})
    assert [r.status_code for r in (first, unjoined, other)] == [202, 202, 202]
    assert len({r.json()["runId"] for r in (first, unjoined, other)}) == 3
    assert reordered.status_code == 200 and reordered.json()["joined"] is True
    assert await redis.xlen(keys.queue) == 3


async def test_after_the_run_ends_a_submit_starts_a_new_run(
    client: httpx.AsyncClient, redis: Redis, keys: Keys, store: EventStore
) -> None:
    first = (await client.post(RUNS, json=BODY)).json()["runId"]
    await store.append(RunStarted(run_id=first, runner_id="r1", attempt=1, steps=()), fence="f1")
    during = await client.post(RUNS, json=BODY)
    assert during.status_code == 200 and during.json() == {
        "runId": first,
        "status": "running",
        "joined": True,
    }
    await store.append(RunCompleted(run_id=first), fence="f1")
    assert await redis.keys(f"{keys.prefix}join:*") == []  # the terminal append cleared the join key
    after = await client.post(RUNS, json=BODY)
    assert after.status_code == 202 and after.json()["runId"] != first


async def test_join_composes_with_idempotency_key(client: httpx.AsyncClient, store: EventStore) -> None:
    first = (await client.post(RUNS, json=BODY)).json()["runId"]
    keyed = await client.post(RUNS, json=BODY, headers={"Idempotency-Key": "k-1"})
    assert keyed.status_code == 200 and keyed.json()["runId"] == first and keyed.json()["joined"] is True
    await store.append(RunStarted(run_id=first, runner_id="r1", attempt=1, steps=()), fence="f1")
    await store.append(RunCompleted(run_id=first), fence="f1")
    # the key now names the joined run: a repeat answers it, also after it ended
    again = await client.post(RUNS, json=BODY, headers={"Idempotency-Key": "k-1"})
    assert again.status_code == 200 and again.json()["runId"] == first
