"""The run API's contract: submit, read, ETag, long-poll, cancel, validation and limits."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
from redis.asyncio import Redis
from starlette.types import Message, Receive, Scope, Send

from services.gateway.limits import BodyLimit
from shared.ids import new_run_id
from shared.keys import Keys
from shared.store import EventStore
from tests.gateway.conftest import GatewayFactory
from tests.gateway.support import BODY, RUNS, Runner

PROBLEM = "application/problem+json"


async def submit(client: httpx.AsyncClient, body: dict[str, object] | None = None, **kw: object) -> str:
    response = await client.post(RUNS, json=body or BODY, **kw)  # type: ignore[arg-type]
    assert response.status_code == 202, response.text
    run_id: str = response.json()["runId"]
    return run_id


async def test_submit_answers_202_with_location_and_appends_run_requested(
    client: httpx.AsyncClient, redis: Redis, keys: Keys, store: EventStore
) -> None:
    response = await client.post(RUNS, json={**BODY, "symbol": "aapl"})
    assert response.status_code == 202
    body = response.json()
    assert body == {"runId": body["runId"], "status": "pending"}
    assert response.headers["location"] == f"{RUNS}/{body['runId']}"
    entries = await store.read(body["runId"])
    assert len(entries) == 1
    event = entries[0][1]
    assert type(event).__name__ == "RunRequested"
    assert event.symbol == "AAPL" and event.user_id == "local" and event.model_id == "offline"  # type: ignore[union-attr]
    assert await redis.xlen(keys.queue) == 1


async def test_get_folds_the_stream_when_the_projector_is_away(
    client: httpx.AsyncClient, runner: Runner
) -> None:
    run_id = await submit(client)
    pending = (await client.get(f"{RUNS}/{run_id}")).json()
    assert pending["status"] == "pending" and pending["runId"] == run_id
    assert [s["name"] for s in pending["steps"]][:2] == ["data_collection", "analyst:market"]
    await runner.run_all(run_id)
    done = await client.get(f"{RUNS}/{run_id}")
    view = done.json()
    assert view["status"] == "completed" and view["progress"] == 100.0
    assert view["result"]["decision"] == "BUY" and view["result"]["keyRisks"] == ["volatility"]
    assert done.headers["etag"] == f'"{view["lastEventId"]}"'
    assert {"createdAt", "startedAt", "completedAt", "durationS", "usage", "currentStep", "etaS"} <= set(view)
    assert set(view["steps"][0]) >= {"name", "label", "status", "progress", "message", "durationS"}


async def test_if_none_match_answers_304(client: httpx.AsyncClient, runner: Runner) -> None:
    run_id = await submit(client)
    first = await client.get(f"{RUNS}/{run_id}")
    etag = first.headers["etag"]
    again = await client.get(f"{RUNS}/{run_id}", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    await runner.start(run_id)
    changed = await client.get(f"{RUNS}/{run_id}", headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["etag"] != etag


async def test_wait_long_polls_until_the_run_ends(client: httpx.AsyncClient, runner: Runner) -> None:
    run_id = await submit(client)

    async def finish_soon() -> None:
        await asyncio.sleep(0.3)
        await runner.run_all(run_id)

    finisher = asyncio.create_task(finish_soon())
    started = asyncio.get_running_loop().time()
    response = await client.get(f"{RUNS}/{run_id}", params={"wait": 10})
    await finisher
    assert response.json()["status"] == "completed"
    assert asyncio.get_running_loop().time() - started < 5


async def test_wait_is_bounded(client: httpx.AsyncClient) -> None:
    run_id = await submit(client)
    response = await client.get(f"{RUNS}/{run_id}", params={"wait": 0.3})
    assert response.status_code == 200 and response.json()["status"] == "pending"
    too_long = await client.get(f"{RUNS}/{run_id}", params={"wait": 3600})
    assert too_long.status_code == 422 and too_long.json()["field"] == "wait"
    posted = await client.post(f"{RUNS}/{run_id}/wait", params={"timeout": 0.2})
    assert posted.status_code == 200 and posted.json()["status"] == "pending"


async def test_unknown_run_is_404_problem(client: httpx.AsyncClient) -> None:
    # A fresh id: its stream could not have expired yet, so no projector is needed to say 404.
    for path in (f"{RUNS}/{new_run_id()}", f"{RUNS}/not-a-run-id"):
        response = await client.get(path)
        assert response.status_code == 404
        assert response.headers["content-type"] == PROBLEM
        assert {"type", "title", "status", "detail"} <= set(response.json())


async def test_cancel_queued_run_then_idempotent_and_finished_run_is_409(
    client: httpx.AsyncClient, runner: Runner
) -> None:
    run_id = await submit(client)
    first = await client.delete(f"{RUNS}/{run_id}")
    assert first.status_code == 202 and first.json()["status"] == "cancelled"
    again = await client.delete(f"{RUNS}/{run_id}")
    assert again.status_code == 202 and again.json()["status"] == "cancelled"
    done_id = await submit(client)
    await runner.run_all(done_id)
    finished = await client.delete(f"{RUNS}/{done_id}")
    assert finished.status_code == 409
    assert finished.json()["runStatus"] == "completed" and "completed" in finished.json()["detail"]


async def test_cancel_running_run_appends_run_cancelled(
    client: httpx.AsyncClient, runner: Runner, store: EventStore
) -> None:
    run_id = await submit(client)
    await runner.start(run_id)
    response = await client.delete(f"{RUNS}/{run_id}")
    assert response.status_code == 202 and response.json()["status"] == "running"
    assert type((await store.read(run_id))[-1][1]).__name__ == "RunCancelled"
    assert (await client.get(f"{RUNS}/{run_id}")).json()["cancelRequested"] is True


async def test_validation_errors_name_the_field_and_append_nothing(
    client: httpx.AsyncClient, redis: Redis, keys: Keys
) -> None:
    cases = [
        ({"symbol": "AAPL", "analysts": ["market", "risk", "astrology"]}, "analysts[2]"),
        ({"symbol": "", "analysts": ["market"]}, "symbol"),
        ({"symbol": "A" * 11, "analysts": ["market"]}, "symbol"),
        ({"symbol": "AA PL", "analysts": ["market"]}, "symbol"),
        ({"symbol": 42, "analysts": ["market"]}, "symbol"),
        ({"symbol": "AAPL", "analysts": []}, "analysts"),
        ({"symbol": "AAPL", "analysts": ["market", "market"]}, "analysts"),
        ({"symbol": "AAPL", "analysts": "market"}, "analysts"),
        ({"symbol": "AAPL", "analysts": ["market"], "userId": "mallory"}, "userId"),
        ({"symbol": "AAPL", "analysts": ["market"], "debateRounds": "2"}, "debateRounds"),
        ({"symbol": "AAPL", "analysts": ["market"], "modelId": "gpt-17"}, "modelId"),
        ({"symbol": "AAPL", "analysts": ["market"], "pipeline": "turbo"}, "pipeline"),
        ({"analysts": ["market"]}, "symbol"),
    ]
    for body, field in cases:
        response = await client.post(RUNS, json=body)
        assert response.status_code == 422, (body, response.text)
        assert response.headers["content-type"] == PROBLEM
        problem = response.json()
        assert problem["field"] == field, (body, problem)
        assert problem["status"] == 422 and problem["detail"] and problem["type"].startswith("https://")
    unknown_model = await client.post(RUNS, json={"symbol": "AAPL", "analysts": ["market"], "modelId": "x"})
    assert "offline" in unknown_model.json()["validModelIds"]
    bad_json = await client.post(RUNS, content=b"{nope", headers={"content-type": "application/json"})
    assert bad_json.status_code == 422 and bad_json.json()["field"] == "body"
    assert await redis.exists(keys.events, keys.queue) == 0


async def test_body_over_the_limit_is_413(client: httpx.AsyncClient) -> None:
    huge = {"symbol": "AAPL", "analysts": ["market"], "pad": "x" * 20_000}
    response = await client.post(RUNS, json=huge)
    assert response.status_code == 413 and response.headers["content-type"] == PROBLEM

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(40):
            yield b" " * 1000

    streamed = await client.post(RUNS, content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413


async def test_active_run_cap_answers_429_with_retry_after(client: httpx.AsyncClient) -> None:
    for _ in range(3):
        await submit(client)
    capped = await client.post(RUNS, json=BODY)
    assert capped.status_code == 429 and int(capped.headers["retry-after"]) > 0
    assert capped.json()["limit"] == 3


async def test_active_run_cap_holds_under_a_race(
    start_gateway: GatewayFactory, redis: Redis, keys: Keys
) -> None:
    gateway = await start_gateway(max_active_runs=2)
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
        answers = await asyncio.gather(*(http.post(RUNS, json=BODY) for _ in range(12)))
    codes = sorted(a.status_code for a in answers)
    assert codes.count(202) == 2 and codes.count(429) == 10
    assert await redis.xlen(keys.queue) == 2


async def test_submission_rate_limit_answers_429(start_gateway: GatewayFactory) -> None:
    gateway = await start_gateway(submit_rate=(2, 60), max_active_runs=0)
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
        codes = [(await http.post(RUNS, json=BODY)).status_code for _ in range(3)]
        limited = await http.post(RUNS, json=BODY)
    assert codes == [202, 202, 429]
    assert limited.status_code == 429 and 0 < int(limited.headers["retry-after"]) <= 60


async def test_high_priority_needs_permission(
    start_gateway: GatewayFactory, redis: Redis, keys: Keys
) -> None:
    gateway = await start_gateway(high_priority_users=frozenset())
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
        refused = await http.post(RUNS, json={**BODY, "priority": "high"})
    assert refused.status_code == 403 and refused.json()["field"] == "priority"
    assert await redis.exists(keys.queue_high) == 0


async def test_a_request_without_a_body_reaches_the_app_unwrapped() -> None:
    """The body limit buffers and wraps only requests that have a body: a GET (an SSE stream held
    for hours, 10,000 a process in row 8) keeps no buffer and no wrapper of ``receive``."""
    seen: list[Receive] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(receive)

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        pass

    limit = BodyLimit(app, max_bytes=10)
    await limit({"type": "http", "method": "GET", "headers": [(b"accept", b"*/*")]}, receive, send)
    await limit({"type": "http", "method": "POST", "headers": [(b"content-length", b"2")]}, receive, send)
    assert seen[0] is receive and seen[1] is not receive
