"""History beyond the run's own events, through a real projector process: the archive on request
(``?archived=true``, per user) and outcomes measured by later runs, in the list items."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from redis.asyncio import Redis

from shared.events import RunCompleted
from shared.results import PastCall
from shared.store import EventStore
from tests.gateway.conftest import GatewayFactory
from tests.gateway.support import BODY, RUNS, Runner, result
from tests.gateway.test_with_projector import auth, open_gateway
from tests.support.processes import ServiceProcess

HORIZON_DAYS = str(1.5 / 86_400)
"""A history horizon of 1.5 s: a run ended that long ago is moved to the archive."""


def projector_process(redis_url: str, state_dir: Path, **extra: str) -> ServiceProcess:
    env = {"REDIS_URL": redis_url, "TT_STATE_DIR": str(state_dir), "TT_PREFIX": "tt:",
           "TT_PROJECTOR_BATCH_WAIT_MS": "50", **extra}  # fmt: skip
    return ServiceProcess("projector", env, log_dir=state_dir)


@pytest.fixture
def archiving(redis: Redis, redis_url: str, state_dir: Path) -> Iterator[ServiceProcess]:
    extra = {"TT_HISTORY_DAYS": HORIZON_DAYS, "TT_RETENTION_INTERVAL_S": "0.3"}
    with projector_process(redis_url, state_dir, **extra) as process:
        yield process


@pytest.fixture
def projector(redis: Redis, redis_url: str, state_dir: Path) -> Iterator[ServiceProcess]:
    with projector_process(redis_url, state_dir) as process:
        yield process


async def listing(http: httpx.AsyncClient, user: str, until: Any, **params: Any) -> list[dict[str, Any]]:
    """The user's list items once ``until(items)`` holds (the projector works in the background)."""
    async with asyncio.timeout(15):
        while True:
            response = await http.get(RUNS, params=params, headers=auth(user))
            assert response.status_code == 200, response.text
            items: list[dict[str, Any]] = response.json()["runs"]
            if until(items):
                return items
            await asyncio.sleep(0.1)


async def test_archived_runs_are_listed_on_request_and_only_to_their_owner(
    start_gateway: GatewayFactory, archiving: ServiceProcess, runner: Runner
) -> None:
    gateway = await open_gateway(start_gateway, archiving.url)
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
        old = (await http.post(RUNS, json=BODY, headers=auth("alice"))).json()["runId"]
        await runner.run_all(old)
        archived = await listing(http, "alice", lambda items: items, archived="true")
        live = (await http.post(RUNS, json=BODY, headers=auth("alice"))).json()["runId"]

        assert [r["runId"] for r in archived] == [old]
        assert archived[0]["status"] == "completed" and archived[0]["usage"]["calls"] == 0
        assert {"usage", "outcome", "demo", "steps", "result"} <= set(archived[0])
        current = await listing(http, "alice", lambda items: items)
        assert [r["runId"] for r in current] == [live]
        assert (await http.get(f"{RUNS}/{old}", headers=auth("alice"))).status_code == 200
        assert await listing(http, "bob", lambda _: True, archived="true") == []
        filtered = await listing(http, "alice", lambda _: True, archived="true", symbol="MSFT")
        assert filtered == []
        page = await http.get(RUNS, params={"archived": "true", "limit": 1}, headers=auth("alice"))
        assert page.json()["nextCursor"] is None
        other = await http.get(RUNS, params={"archived": "true", "user": "bob"}, headers=auth("alice"))
        assert other.status_code == 403 and other.json()["field"] == "user"
        bad = await http.get(RUNS, params={"archived": "maybe"}, headers=auth("alice"))
        assert bad.status_code == 422 and bad.json()["field"] == "archived", bad.text


async def test_a_later_run_s_memory_gives_the_earlier_run_its_outcome_in_the_list(
    start_gateway: GatewayFactory, projector: ServiceProcess, runner: Runner, store: EventStore
) -> None:
    gateway = await open_gateway(start_gateway, projector.url)
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
        earlier = (await http.post(RUNS, json=BODY, headers=auth("alice"))).json()["runId"]
        await runner.run_all(earlier)
        await listing(http, "alice", lambda items: items and items[0]["status"] == "completed")
        before = await http.get(f"{RUNS}/{earlier}", headers=auth("alice"))
        later = (await http.post(RUNS, json={**BODY, "join": False}, headers=auth("alice"))).json()["runId"]
        await runner.start(later)
        call = PastCall(
            run_id=earlier, date="2026-10-01", decision="SELL", rating="Sell", price=10.0,
            horizon_days=30, realised_return=-0.031, horizon_ended=True, hit=True, demo=True,
        )  # fmt: skip
        remembered = msgspec.structs.replace(result(), memory=[call])
        ended = RunCompleted(run_id=later, result=remembered, duration_s=1.0)
        await store.append(ended, fence="f1")

        items = await listing(http, "alice", lambda items: len(items) == 2 and items[1]["outcome"])

        assert [i["runId"] for i in items] == [later, earlier] and items[0]["outcome"] is None
        items = items[1:]
        outcome = items[0]["outcome"]
        assert {k: outcome[k] for k in ("realisedReturn", "correct", "horizonDays", "demo")} == {
            "realisedReturn": -0.031, "correct": True, "horizonDays": 30, "demo": True,
        }  # fmt: skip
        assert outcome["horizonEnded"] is True and items[0]["demo"] is True
        usage_keys = {"calls", "promptTokens", "completionTokens", "costUsd"}
        assert set(items[0]["usage"]) == set(items[0]["steps"][0]["usage"]) == usage_keys
        again = await http.get(
            f"{RUNS}/{earlier}", headers={**auth("alice"), "If-None-Match": before.headers["etag"]}
        )
        assert again.status_code == 200 and again.json()["outcome"] == outcome  # a new ETag
