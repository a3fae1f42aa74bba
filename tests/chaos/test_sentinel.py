"""Fault: the Redis primary SIGKILLed under load, Sentinel promotes the replica.

A real primary, a replica and three Sentinels on loopback; a gateway, two runners and a
projector found the master through the Sentinels (``TT_REDIS_SENTINELS``). Clients submit with
idempotency keys and retry a refusal with the same key, as the API asks; runs execute meanwhile.
The replica receives nothing for a second (it lags), then the primary is SIGKILLed (it stays
down): what it wrote in that second is lost with it. Afterwards: every submission answered 202 exists on the
new master, no key produced two runs, every run ended with exactly one terminal event, and new
runs were accepted again within 30 s of the kill.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared.redis_io import connect, connect_sync
from shared.store import EventStore
from tests.chaos.harness import Cluster, record
from tests.chaos.sentinels import SentinelSet, sentinel_command

BODY = {"symbol": "AAPL", "analysts": ["market", "risk"], "join": False}  # each submit a new run
ACCEPT_AGAIN_BOUND_S = 30.0
LAG_S = 1.0

if sentinel_command() is None:  # pragma: no cover - the suite's redis-server doubles as Sentinel
    print("\n[skip] tests/chaos/test_sentinel.py: no redis-sentinel; run `make system-deps`")  # noqa: T201
    pytest.skip("no redis-sentinel (or redis-server) to run Sentinels with", allow_module_level=True)


@dataclass
class Load:
    """What the clients saw: key → run ids answered 202/200, refusals, and when each 202 came."""

    runs: dict[str, set[str]] = field(default_factory=dict)
    accepted_at: dict[str, float] = field(default_factory=dict)
    refused: int = 0
    unacknowledged: set[str] = field(default_factory=set)
    """Runs written on the primary and answered 503 (no replica confirmed them in time)."""
    statuses: set[int] = field(default_factory=set)
    stop: asyncio.Event = field(default_factory=asyncio.Event)


async def _client(http: httpx.AsyncClient, load: Load) -> None:
    """Submit with a fresh key; on a refusal (503, a dropped connection) retry the same key."""
    while not load.stop.is_set():
        key = uuid.uuid4().hex
        while not load.stop.is_set():
            sent = time.monotonic()
            try:
                response = await http.post("/api/trading/runs", json=BODY, headers={"Idempotency-Key": key})
            except httpx.HTTPError:
                response = None
            if response is not None:
                load.statuses.add(response.status_code)
            if response is not None and response.status_code in (200, 202):
                run_id = response.json()["runId"]
                load.runs.setdefault(key, set()).add(run_id)
                if response.status_code == 202:
                    load.accepted_at[run_id] = sent
                break
            assert response is None or response.status_code == 503, response.text  # never a 500
            if response is not None and "runId" in response.json():
                load.unacknowledged.add(response.json()["runId"])
            load.refused += 1
            await asyncio.sleep(0.3)
        await asyncio.sleep(0.15)


@pytest.fixture
async def system(tmp_path: Path) -> AsyncIterator[tuple[Cluster, SentinelSet]]:
    sentinels = SentinelSet(tmp_path / "redis")
    await asyncio.to_thread(sentinels.start)
    cluster = Cluster(
        sentinels.primary.url,
        tmp_path / "state",
        step_delay_s=0.1,
        TT_SUBMIT_WAIT_MS="500",
        **sentinels.env(),
    )
    await cluster.redis.aclose()  # the harness's client follows the master through the Sentinels
    cluster.redis = connect(sentinels.target)
    cluster.store = EventStore(cluster.redis, cluster.keys)
    cluster.runner("a"), cluster.runner("b"), cluster.gateway()
    try:
        await cluster.start(cluster.projector, *cluster.runners.values(), *cluster.gateways)
        yield cluster, sentinels
    finally:
        await cluster.stop()
        await asyncio.to_thread(sentinels.stop)


async def test_primary_killed_loses_no_acknowledged_run_and_accepts_again_within_30s(
    system: tuple[Cluster, SentinelSet],
) -> None:
    cluster, sentinels = system
    old_port = sentinels.primary.port
    load = Load()
    async with httpx.AsyncClient(base_url=cluster.gateways[0].url, timeout=15) as http:
        clients = [asyncio.create_task(_client(http, load)) for _ in range(3)]
        try:
            await asyncio.sleep(3.0)
            before = len(load.accepted_at)
            killed = await _kill_while_the_replica_lags(sentinels)
            again = await _accepted_again(load, killed)
            await asyncio.sleep(2.0)
        finally:
            load.stop.set()
            await asyncio.gather(*clients)
    assert before > 0, "no run was accepted before the kill: the load never ran"
    assert again <= ACCEPT_AGAIN_BOUND_S, f"new runs accepted again only {again:.1f}s after the kill"
    assert sentinels.master_port() == sentinels.replica.port != old_port
    accepted = list(load.accepted_at)
    missing = [r for r in accepted if not await cluster.redis.exists(cluster.keys.run(r))]
    assert not missing, f"{len(missing)} acknowledged runs lost: {missing[:3]}"
    lost_unacknowledged = [
        r for r in load.unacknowledged if not await cluster.redis.exists(cluster.keys.run(r))
    ]
    assert lost_unacknowledged, f"nothing lost with the primary: the lag was not exercised {load}"
    duplicates = {key: ids for key, ids in load.runs.items() if len(ids) > 1}
    assert not duplicates, duplicates
    await cluster.wait_terminal(accepted, timeout_s=45.0)
    statuses = await cluster.assert_exactly_once(accepted)
    record(
        "sentinel_failover",
        {"accepted": len(accepted), "accepted_before_kill": before, "refused_retried": load.refused,
         "lost": len(missing), "duplicates": len(duplicates), "lag_s": LAG_S,
         "unacknowledged": len(load.unacknowledged), "unacknowledged_lost": len(lost_unacknowledged),
         "statuses": dict(statuses),
         "http_statuses": sorted(load.statuses), "accepted_again_after_kill_s": round(again, 2),
         "down_after_ms": sentinels.down_after_ms},
    )  # fmt: skip


async def _kill_while_the_replica_lags(sentinels: SentinelSet) -> float:
    """For ``LAG_S`` the replica receives nothing, then the primary is SIGKILLed: what it wrote
    in that time is lost with it. Returns when the primary died."""
    return await asyncio.to_thread(sentinels.kill_primary, LAG_S)


async def _accepted_again(load: Load, killed: float) -> float:
    """Seconds from the kill to the first 202 for a request sent after it (or the bound, passed)."""
    deadline = killed + ACCEPT_AGAIN_BOUND_S + 5
    while time.monotonic() < deadline:
        after = [at for at in load.accepted_at.values() if at > killed]
        if after:
            return min(after) - killed
        await asyncio.sleep(0.1)
    return time.monotonic() - killed


async def test_every_kind_of_client_follows_the_master_through_a_failover(tmp_path: Path) -> None:
    """The clients ``connect`` builds from Sentinel settings (command, pooled with a wait,
    blocking reader) and the CLI's synchronous one reach the new master after the old one is
    SIGKILLed, without being rebuilt."""
    sentinels = SentinelSet(tmp_path / "redis")
    await asyncio.to_thread(sentinels.start)
    target = sentinels.target
    clients = [
        connect(target),
        connect(target, max_connections=2, wait_s=1.0),
        connect(target, blocking=True),
    ]
    sync = connect_sync(target, blocking=True)
    try:
        for client in clients:
            assert await client.set("k", "before") and await client.wait(1, 1000) == 1
        assert sync.get("k") == b"before"
        await asyncio.to_thread(sentinels.kill_primary)
        for client in clients:
            await _until_writable(client)
        assert sync.set("k", "sync")
        assert sentinels.master_port() == sentinels.replica.port
        for client in clients:
            assert (await client.info("server"))["tcp_port"] == sentinels.replica.port
        assert sync.info("server")["tcp_port"] == sentinels.replica.port
    finally:
        for client in clients:
            await client.aclose()
        sync.close()
        await asyncio.to_thread(sentinels.stop)


async def _until_writable(client: Redis, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            await client.set("k", "after")
            return
        except RedisError:
            assert time.monotonic() < deadline, "the client never reached the new master"
            await asyncio.sleep(0.2)
