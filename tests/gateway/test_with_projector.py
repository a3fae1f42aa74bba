"""The gateway with a real projector process: history, isolation in lists, reset after expiry."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from shared.keys import Keys
from tests.gateway.conftest import GatewayFactory, RunningGateway
from tests.gateway.support import BODY, RUNS, Runner, SseLog, read_sse, stream_ids
from tests.support.processes import ServiceProcess

TOKENS = {"alice": "alice-secret", "bob": "bob-secret"}


def auth(user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[user]}"}


@pytest.fixture
def projector(redis: Redis, redis_url: str, state_dir: Path) -> Iterator[ServiceProcess]:
    env = {"REDIS_URL": redis_url, "TT_STATE_DIR": str(state_dir), "TT_PREFIX": "tt:",
           "TT_PROJECTOR_BATCH_WAIT_MS": "50"}  # fmt: skip
    with ServiceProcess("projector", env, log_dir=state_dir) as process:
        yield process


@pytest.fixture
async def gateway(start_gateway: GatewayFactory, projector: ServiceProcess) -> RunningGateway:
    tokens = {hashlib.sha256(t.encode()).hexdigest(): u for u, t in TOKENS.items()}
    return await start_gateway(auth=True, api_tokens=tokens, projector_url=projector.url, max_active_runs=0)


@pytest.fixture
async def http(gateway: RunningGateway) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as client:
        yield client


async def listed(http: httpx.AsyncClient, user: str, count: int, **params: Any) -> dict[str, Any]:
    """The user's list once the projector has caught up to ``count`` runs."""
    async with asyncio.timeout(10):
        while True:
            response = await http.get(RUNS, params=params, headers=auth(user))
            assert response.status_code == 200, response.text
            page: dict[str, Any] = response.json()
            if len(page["runs"]) >= count:
                return page
            await asyncio.sleep(0.05)


async def test_history_is_per_user_newest_first_with_stable_cursor(
    http: httpx.AsyncClient, runner: Runner
) -> None:
    ids = []
    for symbol in ("AAPL", "MSFT", "NVDA"):
        response = await http.post(RUNS, json={**BODY, "symbol": symbol}, headers=auth("alice"))
        ids.append(response.json()["runId"])
    bobs = (await http.post(RUNS, json=BODY, headers=auth("bob"))).json()["runId"]
    await runner.run_all(ids[0])
    page = await listed(http, "alice", 3)
    assert [r["runId"] for r in page["runs"]] == ids[::-1]
    assert bobs not in {r["runId"] for r in page["runs"]}
    assert [r["runId"] for r in (await listed(http, "bob", 1))["runs"]] == [bobs]
    first = await listed(http, "alice", 1, limit=2)
    second = await listed(http, "alice", 1, limit=2, cursor=first["nextCursor"])
    assert [r["runId"] for r in first["runs"] + second["runs"]] == ids[::-1]
    async with asyncio.timeout(10):
        while not (done := await listed(http, "alice", 0, status="completed"))["runs"]:
            await asyncio.sleep(0.05)
    assert [r["runId"] for r in done["runs"]] == [ids[0]]
    assert [r["runId"] for r in (await listed(http, "alice", 1, symbol="msft"))["runs"]] == [ids[1]]
    assert (await http.get(RUNS, params={"limit": 1000}, headers=auth("alice"))).status_code == 200
    bad = await http.get(RUNS, params={"cursor": "garbage"}, headers=auth("alice"))
    assert bad.status_code == 422 and bad.json()["field"] == "cursor"
    assert (await http.get(RUNS, params={"status": "bogus"}, headers=auth("alice"))).status_code == 422
    ready = await http.get("/readyz")
    assert ready.status_code == 200


async def test_expired_run_stream_gives_reset_from_the_read_model(
    http: httpx.AsyncClient, runner: Runner, redis: Redis, keys: Keys
) -> None:
    run_id = (await http.post(RUNS, json=BODY, headers=auth("alice"))).json()["runId"]
    await runner.run_all(run_id)
    await listed(http, "alice", 1, status="completed")
    await redis.delete(keys.run(run_id), keys.meta(run_id))  # what expiry does 48 h after the end
    log = SseLog()
    headers = {**auth("alice"), "Last-Event-ID": "1-0"}
    async with http.stream("GET", f"{RUNS}/{run_id}/events", headers=headers) as response:
        assert response.status_code == 200
        await read_sse(response, log)
    assert log.events == ["reset", "end"]
    assert log.messages[0].data["state"]["status"] == "completed"
    assert (await http.get(f"{RUNS}/{run_id}", headers=auth("alice"))).json()["status"] == "completed"
    gone = await http.get(f"{RUNS}/{run_id}/events", headers=auth("bob"))
    assert gone.status_code == 404


async def test_every_client_of_a_trimmed_run_gets_a_reset_also_while_the_hub_follows_it(
    http: httpx.AsyncClient, runner: Runner, redis: Redis, keys: Keys
) -> None:
    run_id = (await http.post(RUNS, json=BODY, headers=auth("alice"))).json()["runId"]
    await runner.start(run_id)
    await runner.step(run_id, "data_collection", 0)
    await listed(http, "alice", 1)
    await redis.xtrim(keys.run(run_id), maxlen=2, approximate=False)  # RunRequested is gone
    logs = [SseLog(), SseLog()]
    async with contextlib.AsyncExitStack() as stack:
        for log in logs:  # the second joins while the hub already follows the trimmed stream
            response = await stack.enter_async_context(
                http.stream("GET", f"{RUNS}/{run_id}/events", headers=auth("alice"))
            )
            assert response.status_code == 200
            await read_sse(response, log, stop_after=2)
    retained = stream_ids(await redis.xrange(keys.run(run_id)))
    for log in logs:
        assert log.events[0] == "reset" and log.ids == retained
