"""Limits and hostile input against a real gateway (auth on).

Covered elsewhere (not repeated): 413 for a declared and a streamed body, the active-run cap and
the submission rate 429 with Retry-After, high priority needs permission
(tests/gateway/test_runs.py); schemathesis fuzzing of every route in the OpenAPI schema, no 500
and problem+json everywhere (tests/gateway/test_fuzz.py); a CSV path outside its folder is
refused by the provider itself (tests/runner/pipeline/test_pipeline.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

import httpx
import pytest

from shared.events import RunRequested
from shared.ids import new_run_id
from shared.store import EventStore
from tests.security.conftest import ALICE, BOB, Secured, bearer

API = "/api/trading"

HOSTILE_SYMBOLS = [
    "../../etc/passwd", "..", "AAPL/../../x", "$(rm -rf ~)", "`id`", "AAPL;ls", "A|B", "AAPL\x00",
    "AAPL\n", "\uff21\uff21\uff30\uff2c", "AAPL\u202e", "A\u0301", "<script>", "%2e%2e%2f", "AAPL ",
    "", "A" * 11, "C:\\Windows", "~root", "*", "AAPL'--",
]  # fmt: skip
HOSTILE_BODIES: list[tuple[str, dict[str, Any] | str]] = [
    ("analysts", {"symbol": "AAPL", "analysts": ["market"] * 5000}),
    ("analysts", {"symbol": "AAPL", "analysts": []}),
    ("analysts", {"symbol": "AAPL", "analysts": ["market", "market"]}),
    ("analysts[0]", {"symbol": "AAPL", "analysts": ["../market"]}),
    ("debateRounds", {"symbol": "AAPL", "analysts": ["market"], "debateRounds": -1}),
    ("debateRounds", {"symbol": "AAPL", "analysts": ["market"], "debateRounds": 10**30}),
    ("maxCostUsd", {"symbol": "AAPL", "analysts": ["market"], "maxCostUsd": -0.01}),
    ("maxTokens", {"symbol": "AAPL", "analysts": ["market"], "maxTokens": 1.5}),
    ("maxCostUsd", '{"symbol": "AAPL", "analysts": ["market"], "maxCostUsd": NaN}'),
    ("maxCostUsd", '{"symbol": "AAPL", "analysts": ["market"], "maxCostUsd": Infinity}'),
    ("maxCostUsd", '{"symbol": "AAPL", "analysts": ["market"], "maxCostUsd": 1e400}'),
    ("modelId", {"symbol": "AAPL", "analysts": ["market"], "modelId": "../../models.toml"}),
    ("dataProvider", {"symbol": "AAPL", "analysts": ["market"], "dataProvider": "file:///etc/passwd"}),
    ("userId", {"symbol": "AAPL", "analysts": ["market"], "userId": "bob"}),
    ("body", '{"symbol": "AAPL", "analysts": ["market"]'),
    ("body", '[{"symbol": "AAPL"}]'),
    ("symbol", '{"symbol": {"$gt": ""}, "analysts": ["market"]}'),
]


def _post(secured: Secured, body: dict[str, Any] | str) -> httpx.Response:
    headers = {**bearer(ALICE), "Content-Type": "application/json"}
    content = body if isinstance(body, str) else json.dumps(body)
    return httpx.post(f"{secured.url}{API}/runs", content=content, headers=headers, timeout=10)


def _assert_refused(response: httpx.Response, status: int = 422) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert "Traceback" not in response.text and 'File "' not in response.text
    doc: dict[str, Any] = response.json()
    assert {"type", "title", "status", "detail"} <= set(doc)
    return doc


def _run_count(secured: Secured) -> int:
    return len(list(secured.redis.scan_iter(match=f"{secured.keys.prefix}runmeta:*")))


@pytest.mark.parametrize("symbol", HOSTILE_SYMBOLS)
def test_hostile_symbols_are_refused_naming_the_field(secured: Secured, symbol: str) -> None:
    """Path, shell, control, bidi, full-width and over-long symbols: 422 naming ``symbol``, no run."""
    before = _run_count(secured)
    doc = _assert_refused(_post(secured, {"symbol": symbol, "analysts": ["market"], "dataProvider": "csv"}))
    assert doc["field"] == "symbol", doc
    assert _run_count(secured) == before


@pytest.mark.parametrize(
    ("field", "body"), HOSTILE_BODIES, ids=[f"{f}-{i}" for i, (f, _) in enumerate(HOSTILE_BODIES)]
)
def test_hostile_bodies_are_refused_naming_the_field(
    secured: Secured, field: str, body: dict[str, Any] | str
) -> None:
    """Huge or repeated analysts lists, negative/NaN/infinite numbers, unknown models, foreign
    user ids and broken JSON: 413 or 422 problem+json naming the field; nothing is recorded."""
    before = _run_count(secured)
    response = _post(secured, body)
    if response.status_code == 413:
        _assert_refused(response, 413)
    else:
        doc = _assert_refused(response)
        assert doc["field"] == field or doc["field"].startswith(field), doc
    assert _run_count(secured) == before


@pytest.mark.parametrize(
    "path",
    [
        "/static/../services/gateway/settings.py", "/static/..%2f..%2fpyproject.toml",
        "/static/%2e%2e/%2e%2e/etc/passwd", f"{API}/runs/..%2f..%2fetc%2fpasswd", f"{API}/runs/%00",
        f"{API}/runs/{'a' * 5000}",
    ],
)  # fmt: skip
def test_path_tricks_are_404_problems(secured: Secured, path: str) -> None:
    response = httpx.get(f"{secured.url}{path}", headers=bearer(ALICE), timeout=10)
    assert response.status_code in (404, 422), response.text
    assert "[tool" not in response.text and "root:" not in response.text and "Traceback" not in response.text


def test_a_bad_cursor_or_last_event_id_is_422_not_500(secured: Secured) -> None:
    for params, headers in (
        ({"cursor": "eyJ4IjoxfQ"}, {}),
        ({"cursor": "\u202e" * 50}, {}),
        ({}, {"Last-Event-ID": "1-2-3"}),
        ({"after": "-1"}, {}),
    ):
        url = f"{API}/runs/{new_run_id()}/events" if "cursor" not in params else f"{API}/runs"
        response = httpx.get(f"{secured.url}{url}", params=params, headers={**bearer(ALICE), **headers})
        _assert_refused(response)


async def test_list_page_size_is_capped(secured: Secured, redis_url: str) -> None:
    """``limit=100000`` answers at most 100 runs and a cursor for the rest."""
    from shared.redis_io import connect

    redis = connect(redis_url)
    try:
        store = EventStore(redis, secured.keys)
        for _ in range(105):
            event = RunRequested(run_id=new_run_id(), user_id="carol", symbol="AAPL", model_id="offline",
                                 analysts=("market",))  # fmt: skip
            await store.submit(event)
    finally:
        await redis.aclose()
    # carol has no token; her runs are read through the projector's internal API the gateway uses
    deadline = time.monotonic() + 20
    async with httpx.AsyncClient(base_url=secured.projector.url, timeout=10) as http:
        while (await http.get("/internal/counts", params={"user_id": "carol"})).json()["pending"] < 105:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        internal = await http.get("/internal/runs", params={"user_id": "carol", "limit": 100000})
        assert internal.status_code == 422, internal.text  # the projector refuses, never scans it all
    async with httpx.AsyncClient(base_url=secured.url, timeout=10) as http:
        for _ in range(101):  # bob: 101 runs (cap 3 active: cancel as we go)
            posted = await http.post(
                f"{API}/runs", json={"symbol": "MSFT", "analysts": ["market"]}, headers=bearer(BOB)
            )
            if posted.status_code != 202:
                break
            await http.delete(f"{API}/runs/{posted.json()['runId']}", headers=bearer(BOB))
    async with httpx.AsyncClient(base_url=secured.projector.url, timeout=10) as http:
        # the list is the read model: wait until it holds all 101 (it trails the log by a batch)
        while sum((await http.get("/internal/counts", params={"user_id": "bob"})).json().values()) < 101:
            assert time.monotonic() < deadline + 20
            await asyncio.sleep(0.1)
    async with httpx.AsyncClient(base_url=secured.url, timeout=10) as http:
        page = await http.get(f"{API}/runs", params={"limit": 100000}, headers=bearer(BOB))
    assert page.status_code == 200
    assert len(page.json()["runs"]) == 100 and page.json()["nextCursor"]


async def test_sse_connections_per_user_are_capped(secured: Secured) -> None:
    """One user opening streams gets 429 problem+json with Retry-After past the per-user cap
    (``TT_SSE_MAX_PER_USER``, 20 here; off by default); another user is not affected, and closed
    streams free their slots."""
    run_id = (
        httpx.post(
            f"{secured.url}{API}/runs", json={"symbol": "AAPL", "analysts": ["market"]}, headers=bearer(BOB)
        )
        .json()
        .get("runId", new_run_id())
    )
    statuses: list[int] = []
    limits = httpx.Limits(max_connections=300)
    async with contextlib.AsyncExitStack() as stack:
        http = await stack.enter_async_context(
            httpx.AsyncClient(base_url=secured.url, timeout=10, limits=limits)
        )
        for _ in range(200):
            response = await stack.enter_async_context(
                http.stream("GET", f"{API}/runs/{run_id}/events", headers=bearer(BOB))
            )
            statuses.append(response.status_code)
            if response.status_code == 429:
                assert response.headers.get("retry-after")
                assert response.headers["content-type"] == "application/problem+json"
                others = await http.get(f"{API}/runs/{new_run_id()}/events", headers=bearer(ALICE))
                assert others.status_code == 404  # alice is not capped by bob's streams
                break
    assert statuses == [200] * 20 + [429], statuses
    async with httpx.AsyncClient(base_url=secured.url, timeout=10) as http:
        deadline = time.monotonic() + 10
        while True:  # the server sees the disconnects a moment later
            async with http.stream("GET", f"{API}/runs/{run_id}/events", headers=bearer(BOB)) as again:
                if again.status_code == 200:
                    break
            assert time.monotonic() < deadline, "closed streams never gave their slots back"
            await asyncio.sleep(0.1)
