"""Share links: the owner makes one; anyone holding it reads that run (JSON and SSE) and nothing
else; an expired or revoked link, a forged secret and another user's attempt are 404s."""

from __future__ import annotations

import asyncio
import hashlib

import httpx

from shared.events import RunCompleted, RunStarted
from shared.store import EventStore
from tests.gateway.conftest import GatewayFactory
from tests.gateway.support import BODY, RUNS, SseLog, read_sse

TOKENS = {"alice": "alice-token", "bob": "bob-token"}


def auth(user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[user]}"}


async def test_a_link_reads_one_run_until_revoked(start_gateway: GatewayFactory, store: EventStore) -> None:
    tokens = {hashlib.sha256(t.encode()).hexdigest(): u for u, t in TOKENS.items()}
    gateway = await start_gateway(auth=True, api_tokens=tokens)
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
        run_id = (await http.post(RUNS, json=BODY, headers=auth("alice"))).json()["runId"]
        assert (await http.post(f"{RUNS}/{run_id}/shares", headers=auth("bob"))).status_code == 404
        made = await http.post(f"{RUNS}/{run_id}/shares", headers=auth("alice"), json={"expiresInS": 3600})
        assert made.status_code == 201, made.text
        link = made.json()["url"]
        page = await http.get(f"{gateway.url}{made.json()['pageUrl']}")  # what a person opens
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert page.headers["referrer-policy"] == "no-referrer"
        await store.append(RunStarted(run_id=run_id, runner_id="r", attempt=1, steps=()), fence="f")
        await store.append(RunCompleted(run_id=run_id), fence="f")
        seen = await http.get(link)  # no credentials
        assert seen.status_code == 200 and seen.json()["runId"] == run_id and "shares" not in seen.json()
        async with http.stream("GET", f"{link}/events") as response:
            log = await read_sse(response, SseLog())
        assert "RunCompleted" in log.events and log.events[-1] == "end"
        forged = link[: link.rindex(".") + 1] + "x" * 32
        assert (await http.get(forged)).status_code == 404
        owner_view = (await http.get(f"{RUNS}/{run_id}", headers=auth("alice"))).json()
        assert [s["shareId"] for s in owner_view["shares"]] == [made.json()["shareId"]]
        assert "tokenSha256" not in owner_view["shares"][0]
        revoked = await http.delete(f"{RUNS}/{run_id}/shares/{made.json()['shareId']}", headers=auth("alice"))
        assert revoked.status_code == 204
        assert (await http.get(link)).status_code == 404
        assert (await http.get(f"{link}/events")).status_code == 404


async def test_an_expiry_out_of_bounds_is_422(client: httpx.AsyncClient) -> None:
    run_id = (await client.post(RUNS, json=BODY)).json()["runId"]
    response = await client.post(f"{RUNS}/{run_id}/shares", json={"expiresInS": 1})
    assert response.status_code == 422 and response.json()["field"] == "expiresInS"


async def test_revoking_ends_an_open_shared_stream(client: httpx.AsyncClient, store: EventStore) -> None:
    run_id = (await client.post(RUNS, json=BODY)).json()["runId"]
    await store.append(RunStarted(run_id=run_id, runner_id="r", attempt=1, steps=()), fence="f")
    other = (await client.post(f"{RUNS}/{run_id}/shares")).json()
    made = (await client.post(f"{RUNS}/{run_id}/shares")).json()
    async with client.stream("GET", f"{made['url']}/events") as response:
        log = await read_sse(response, SseLog(), stop_after=4)  # requested, started, two shares
        assert (await client.delete(f"{RUNS}/{run_id}/shares/{other['shareId']}")).status_code == 204
        assert (await client.delete(f"{RUNS}/{run_id}/shares/{made['shareId']}")).status_code == 204
        async with asyncio.timeout(10):
            await read_sse(response, log, stop_on_end=False)  # until the server closes it
    assert log.events[-3:] == ["ShareRevoked", "ShareRevoked", "revoked"]
