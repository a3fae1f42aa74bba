"""The load soak: users submitting at a steady rate, cancelling some runs, following each over
SSE with a reconnect mid-way; at the end the counts of Redis, the read model and the clients'
own logs agree, and the memory of each service is reported (start/end RSS).

30 s in the default run; ``make soak`` (``-m slow``) runs it for 5 minutes.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.chaos.harness import Cluster, record
from tests.gateway.support import SseLog, read_sse, stream_ids
from tests.projector.support import log_head, wait_caught_up
from tests.support.processes import ServiceProcess

USERS = 4
SUBMIT_EVERY_S = 1.0
CANCEL_SHARE = 0.2


@dataclass
class ClientLog:
    """One user's own record of what the API told it."""

    user: str
    token: str
    accepted: list[str] = field(default_factory=list)
    refused: Counter[int] = field(default_factory=Counter)
    cancel_accepted: set[str] = field(default_factory=set)
    ended: dict[str, str] = field(default_factory=dict)
    seen_ids: dict[str, list[str]] = field(default_factory=dict)
    reconnects: int = 0

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def rss_mb(service: ServiceProcess) -> float:
    assert service.process is not None
    for line in Path(f"/proc/{service.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


async def _follow(http: httpx.AsyncClient, log: ClientLog, run_id: str) -> None:
    """Read a couple of messages, drop the connection, resume with Last-Event-ID to the end."""
    sse, url = SseLog(), f"/api/trading/runs/{run_id}/events"
    async with http.stream("GET", url, headers=log.headers) as response:
        assert response.status_code == 200
        await read_sse(response, sse, stop_after=2)
    while not sse.events or sse.events[-1] != "end":
        log.reconnects += 1
        sse.lines = None
        headers = {**log.headers, "Last-Event-ID": sse.ids[-1]}
        async with http.stream("GET", url, headers=headers) as response:
            assert response.status_code == 200
            await read_sse(response, sse)
    log.seen_ids[run_id] = sse.ids
    log.ended[run_id] = sse.messages[-1].data["status"]


async def _user(
    http: httpx.AsyncClient, log: ClientLog, until: float, followers: list[asyncio.Task[None]]
) -> None:
    rng = random.Random(log.user)
    while time.monotonic() < until:
        noop = rng.random() < 0.25
        # join: False — a repeat of a live run would join it (200), and the soak counts new runs.
        body = {"symbol": rng.choice(["AAPL", "MSFT", "NVDA"]), "analysts": ["market"], "join": False}
        response = await http.post(
            "/api/trading/runs", json={**body, "pipeline": "noop"} if noop else body, headers=log.headers
        )
        if response.status_code == 202:
            run_id = response.json()["runId"]
            log.accepted.append(run_id)
            followers.append(asyncio.create_task(_follow(http, log, run_id)))
            if rng.random() < CANCEL_SHARE:
                await asyncio.sleep(rng.uniform(0, 0.3))
                cancel = await http.delete(f"/api/trading/runs/{run_id}", headers=log.headers)
                assert cancel.status_code in (202, 409), cancel.text
                if cancel.status_code == 202:
                    log.cancel_accepted.add(run_id)
        else:
            assert response.status_code == 429 and response.headers["retry-after"], response.text
            log.refused[response.status_code] += 1
        await asyncio.sleep(SUBMIT_EVERY_S * rng.uniform(0.5, 1.5))


async def soak(redis_url: str, tmp_path: Path, seconds: float) -> None:
    tokens = {f"user{i}": f"token-{i}-{random.random()}" for i in range(USERS)}
    api_tokens = ",".join(f"{u}:{hashlib.sha256(t.encode()).hexdigest()}" for u, t in tokens.items())
    cluster = Cluster(
        redis_url, tmp_path, step_delay_s=0.05, TT_AUTH="1", TT_API_TOKENS=api_tokens, TT_MAX_ACTIVE_RUNS="4"
    )
    gateway = cluster.gateway()
    runners = [cluster.runner("a"), cluster.runner("b")]
    services = {
        "gateway": gateway,
        "projector": cluster.projector,
        "runner-a": runners[0],
        "runner-b": runners[1],
    }
    logs = [ClientLog(user, token) for user, token in tokens.items()]
    try:
        await cluster.start(cluster.projector, *runners, gateway)
        limits = httpx.Limits(max_connections=500, max_keepalive_connections=50)
        async with httpx.AsyncClient(base_url=gateway.url, timeout=30, limits=limits) as http:
            followers: list[asyncio.Task[None]] = []
            until = time.monotonic() + seconds
            users = [asyncio.create_task(_user(http, log, until, followers)) for log in logs]
            await asyncio.sleep(min(5.0, seconds / 4))
            rss_start = {name: rss_mb(s) for name, s in services.items()}
            await asyncio.gather(*users)
            done, stuck = await asyncio.wait(followers, timeout=120)
            assert not stuck, f"{len(stuck)} SSE followers never saw the end\n{cluster.logs()}"
            for task in done:
                task.result()
            rss_end = {name: rss_mb(s) for name, s in services.items()}
        await _check(cluster, logs)
        record(
            f"soak_{int(seconds)}s",
            {
                "seconds": seconds, "users": USERS, "accepted": sum(len(x.accepted) for x in logs),
                "refused_429": sum(x.refused[429] for x in logs),
                "cancels_accepted": sum(len(x.cancel_accepted) for x in logs),
                "sse_reconnects": sum(x.reconnects for x in logs),
                "statuses": dict(Counter(s for x in logs for s in x.ended.values())),
                "rss_mb_start": rss_start, "rss_mb_end": rss_end,
            },
        )  # fmt: skip
        for name in services:
            assert rss_end[name] < rss_start[name] + 100, (name, rss_start[name], rss_end[name])
    finally:
        await cluster.stop()


async def _check(cluster: Cluster, logs: list[ClientLog]) -> None:
    accepted = [run_id for log in logs for run_id in log.accepted]
    assert len(accepted) == len(set(accepted)) and accepted
    folds = await cluster.wait_terminal(accepted)
    await cluster.assert_exactly_once(accepted)
    await cluster.assert_queues_drained()
    await asyncio.to_thread(
        wait_caught_up, cluster.projector.url, await log_head(cluster.redis, cluster.keys.events)
    )
    async with httpx.AsyncClient(base_url=cluster.projector.url, timeout=10) as http:
        for log in logs:
            redis_counts = Counter(folds[r].status for r in log.accepted)
            client_counts = Counter(log.ended[r] for r in log.accepted)
            read_model = (await http.get("/internal/counts", params={"user_id": log.user})).json()
            assert client_counts == redis_counts, (log.user, client_counts, redis_counts)
            assert {k: v for k, v in read_model.items() if v} == dict(redis_counts), (log.user, read_model)
            cancelled = {r for r in log.accepted if folds[r].status == "cancelled"}
            assert cancelled <= log.cancel_accepted, "a run was cancelled that its user never cancelled"
            for run_id in log.accepted:
                expected = stream_ids(await cluster.redis.xrange(cluster.keys.run(run_id)))
                assert log.seen_ids[run_id] == expected, run_id


@pytest.mark.timeout(300)
async def test_soak_default(redis_url: str, tmp_path: Path) -> None:
    """30 s (``TT_SOAK_S``) of steady load with cancels and SSE reconnects: nothing lost, counts agree."""
    await soak(redis_url, tmp_path, float(os.environ.get("TT_SOAK_S", "30")))


@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_soak_five_minutes(redis_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """The same for 5 minutes (``make soak``); RSS start/end shows whether memory stays flat."""
    if "slow" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("5-minute soak: run by `make soak` (pytest -m slow)")
    await soak(redis_url, tmp_path, 300.0)
