"""The gateway with real projector processes (one, two, or none): history, isolation in lists, reset
after expiry, everything but history with every projector down, and failover between projectors."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from services.gateway.projectors import MISSES_DOWN, ProjectorPool, ProjectorUnavailable
from services.gateway.settings import GatewaySettings
from shared.config import ConfigError, Env
from shared.events import EventCodec, StepStarted
from shared.keys import Keys
from shared.redis_server import free_port
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


def start_projector(redis_url: str, home: Path, port: int | None = None) -> ServiceProcess:
    """A projector with its own name (consumer group), consumer and state folder (SQLite file)."""
    env = {"REDIS_URL": redis_url, "TT_STATE_DIR": str(home), "TT_PREFIX": "tt:",
           "TT_PROJECTOR_BATCH_WAIT_MS": "50", "TT_PROJECTOR_NAME": home.name,
           "TT_PROJECTOR_CONSUMER": home.name}  # fmt: skip
    return ServiceProcess("projector", env, port=port, log_dir=home).start()


@pytest.fixture
def projectors(redis: Redis, redis_url: str, state_dir: Path) -> Iterator[list[ServiceProcess]]:
    """Two projectors folding the same log into two SQLite files; stopped (whichever live) at the end."""
    started = [start_projector(redis_url, state_dir / name) for name in ("pa", "pb")]
    try:
        yield started
    finally:
        for process in started:
            process.stop()


async def open_gateway(start_gateway: GatewayFactory, *urls: str) -> RunningGateway:
    tokens = {hashlib.sha256(t.encode()).hexdigest(): u for u, t in TOKENS.items()}
    urls = urls or (f"http://127.0.0.1:{free_port()}",)  # nothing listens there
    return await start_gateway(auth=True, api_tokens=tokens, projector_urls=urls, max_active_runs=0)


@pytest.fixture
async def gateway(start_gateway: GatewayFactory, projector: ServiceProcess) -> RunningGateway:
    return await open_gateway(start_gateway, projector.url)


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


async def test_the_run_list_answers_304_to_its_etag_until_a_run_moves(
    http: httpx.AsyncClient, runner: Runner
) -> None:
    """A history poller costs almost nothing while nothing changed (ETag / If-None-Match)."""
    run_id = (await http.post(RUNS, json=BODY, headers=auth("alice"))).json()["runId"]
    await listed(http, "alice", 1)
    first = await http.get(RUNS, headers=auth("alice"))
    etag = first.headers["etag"]
    same = await http.get(RUNS, headers={**auth("alice"), "If-None-Match": etag})
    assert same.status_code == 304 and same.headers["etag"] == etag and not same.content
    other = await http.get(RUNS, headers={**auth("bob"), "If-None-Match": etag})
    assert other.status_code == 200  # another user's list is another list
    await runner.run_all(run_id)
    async with asyncio.timeout(10):
        while (
            moved := await http.get(RUNS, headers={**auth("alice"), "If-None-Match": etag})
        ).status_code == 304:
            await asyncio.sleep(0.05)
    assert moved.status_code == 200 and moved.headers["etag"] != etag


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
        # an EventSource accepts only this type; no proxy may cache or buffer it
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
        await read_sse(response, log)
    assert log.events == ["reset", "end"]
    assert log.messages[0].data["state"]["status"] == "completed"
    assert (await http.get(f"{RUNS}/{run_id}", headers=auth("alice"))).json()["status"] == "completed"
    gone = await http.get(f"{RUNS}/{run_id}/events", headers=auth("bob"))
    assert gone.status_code == 404 and run_id in gone.json()["detail"]


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


async def test_a_client_joining_a_followed_run_trimmed_meanwhile_gets_a_reset(
    http: httpx.AsyncClient, runner: Runner, redis: Redis, keys: Keys
) -> None:
    """The hub follows the run's tail, so it cannot know a trim behind it: a new client's position
    is checked against the stream itself (before the fix this client got a silent tail)."""
    run_id = (await http.post(RUNS, json=BODY, headers=auth("alice"))).json()["runId"]
    await runner.start(run_id)
    await runner.step(run_id, "data_collection", 0)
    await listed(http, "alice", 1)
    async with contextlib.AsyncExitStack() as stack:
        first = await stack.enter_async_context(
            http.stream("GET", f"{RUNS}/{run_id}/events", headers=auth("alice"))
        )
        await read_sse(first, SseLog(), stop_after=2)  # the hub now follows the run
        await redis.xtrim(keys.run(run_id), maxlen=2, approximate=False)  # RunRequested is gone
        second = await stack.enter_async_context(
            http.stream("GET", f"{RUNS}/{run_id}/events", headers=auth("alice"))
        )
        log = SseLog()
        await read_sse(second, log, stop_after=2)
    retained = stream_ids(await redis.xrange(keys.run(run_id)))
    assert log.events[0] == "reset" and log.ids == retained
    # The reset carries the read model's snapshot to start from, and says why.
    reset = log.messages[0].data
    assert reset["state"]["runId"] == run_id and reset["state"]["status"] in ("pending", "running")
    assert reset["reason"] == "the events after your position are gone"


async def test_a_trimmed_run_the_read_model_lags_is_its_projected_state_brought_up_to_date(
    http: httpx.AsyncClient, runner: Runner, redis: Redis, keys: Keys, projector: ServiceProcess
) -> None:
    """The stream lost its start (a trim) and moved on past the read model: the run is the
    projected state plus what followed, and a client replaying from 0 gets a reset (before the
    fix: a 404, and the SSE tail without a reset, depending on the projector's lag). With no
    projector answering, a trimmed run is a 503, not a false 404."""
    run_id = (await http.post(RUNS, json=BODY, headers=auth("alice"))).json()["runId"]
    await runner.start(run_id)
    await runner.step(run_id, "data_collection", 0)
    await listed(http, "alice", 1)
    await redis.xtrim(keys.run(run_id), maxlen=2, approximate=False)  # RunRequested is gone
    # An event the projector has not folded yet: on the run stream only (the log feeds projectors).
    later = StepStarted(run_id=run_id, step="analyst:market", index=1)
    newest = (await redis.xadd(keys.run(run_id), {"e": EventCodec().encode(later)})).decode()
    shown = await http.get(f"{RUNS}/{run_id}", headers=auth("alice"))
    assert shown.status_code == 200, shown.text
    state = shown.json()
    assert state["symbol"] == BODY["symbol"] and state["lastEventId"] == newest
    assert state["currentStep"] == "analyst:market" or state["steps"][1]["status"] == "running", state
    assert (await http.get(f"{RUNS}/{run_id}", headers=auth("bob"))).status_code == 404
    log = SseLog()
    async with http.stream("GET", f"{RUNS}/{run_id}/events", headers=auth("alice")) as response:
        assert response.status_code == 200
        await read_sse(response, log, stop_after=2)
    assert log.events[0] == "reset" and log.messages[0].data["state"]["symbol"] == BODY["symbol"]

    projector.signal(signal.SIGSTOP)
    try:
        hung = await http.get(f"{RUNS}/{run_id}", headers=auth("alice"))
        assert hung.status_code == 503 and "retry-after" in hung.headers, hung.text
    finally:
        projector.signal(signal.SIGCONT)


async def test_with_every_projector_down_runs_work_from_their_streams_and_history_is_503(
    start_gateway: GatewayFactory, runner: Runner
) -> None:
    gateway = await open_gateway(start_gateway)
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
        ready = await http.get("/readyz")
        assert ready.status_code == 200 and [p["healthy"] for p in ready.json()["projectors"]] == [False]
        run_id = (await http.post(RUNS, json=BODY, headers=auth("alice"))).json()["runId"]
        assert (await http.get(f"{RUNS}/{run_id}", headers=auth("alice"))).json()["status"] == "pending"
        progress = await http.get(f"/api/trading/progress/{run_id}", headers=auth("alice"))
        assert progress.status_code == 200, progress.text
        for method, path in (("GET", f"{RUNS}/{run_id}"), ("GET", f"/api/trading/progress/{run_id}"),
                             ("GET", f"{RUNS}/{run_id}/events"), ("DELETE", f"{RUNS}/{run_id}")):  # fmt: skip
            assert (await http.request(method, path, headers=auth("bob"))).status_code == 404, path
        log = SseLog()
        async with http.stream("GET", f"{RUNS}/{run_id}/events", headers=auth("alice")) as response:
            assert response.status_code == 200
            await read_sse(response, log, stop_after=1)
            await runner.run_all(run_id)
            await read_sse(response, log)
        assert log.events[-1] == "end" and log.messages[-1].data["status"] == "completed"
        waited = await http.post(f"{RUNS}/{run_id}/wait", params={"timeout": 1}, headers=auth("alice"))
        assert waited.status_code == 200 and waited.json()["status"] == "completed"
        second = (await http.post(RUNS, json=BODY, headers=auth("alice"))).json()["runId"]
        cancelled = await http.delete(f"{RUNS}/{second}", headers=auth("alice"))
        assert cancelled.status_code == 202 and cancelled.json()["status"] == "cancelled"
        await assert_history_unavailable(http)
        assert 'tickertape_gateway_projector_up{url="http://127.0.0.1:' in (await http.get("/metrics")).text
        expired = await http.get(f"{RUNS}/000000000001{'a' * 24}", headers=auth("alice"))  # stream long gone
        assert expired.status_code == 503 and expired.headers["Retry-After"] == "2", expired.text
        assert "retry" in expired.json()["detail"].lower()


async def assert_history_unavailable(http: httpx.AsyncClient) -> None:
    history = await http.get(RUNS, headers=auth("alice"))
    assert history.status_code == 503 and history.headers["content-type"] == "application/problem+json"
    assert int(history.headers["Retry-After"]) > 0 and "retry" in history.json()["detail"].lower()
    assert history.json()["type"].endswith("/read-model-unavailable")


async def list_statuses(http: httpx.AsyncClient, seconds: float) -> list[tuple[float, int, float]]:
    """(when, status, latency) of back-to-back list calls for ``seconds``."""
    seen: list[tuple[float, int, float]] = []
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while (began := loop.time()) < end:
        status = (await http.get(RUNS, headers=auth("alice"))).status_code
        seen.append((began, status, loop.time() - began))
        await asyncio.sleep(0.02)
    return seen


async def test_list_fails_over_within_two_seconds_then_503_then_recovers(
    start_gateway: GatewayFactory, projectors: list[ServiceProcess], redis_url: str, state_dir: Path
) -> None:
    gateway = await open_gateway(start_gateway, *(p.url for p in projectors))
    pool = gateway.app.state.runtime.projectors
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
        await listed(http, "alice", 0)
        victim = next(p for p in projectors if p.url == pool.healthy[0].url)  # the one being read
        survivor = next(p for p in projectors if p is not victim)
        watch = asyncio.create_task(list_statuses(http, 3.0))
        await asyncio.sleep(0.3)
        killed_at = asyncio.get_running_loop().time()
        victim.kill()
        seen = await watch
        assert {status for _, status, _ in seen} <= {200, 503}, seen
        failing = [at for at, status, _ in seen if status != 200 and at >= killed_at]
        outage = (max(failing) - killed_at) if failing else 0.0
        print(f"failover: {len(failing)} failed lists, outage {outage:.3f}s")  # noqa: T201
        after_kill = [s for s in seen if s[0] >= killed_at]
        assert outage <= 2.0 and not failing and seen[-1][1] == 200, after_kill  # the next one, at once

        survivor.kill()
        async with asyncio.timeout(2):
            while (await http.get(RUNS, headers=auth("alice"))).status_code != 503:
                await asyncio.sleep(0.05)
        await assert_history_unavailable(http)
        assert (await http.get("/readyz")).status_code == 200

        back = start_projector(redis_url, victim.log_path.parent, port=victim.port)  # its own file again
        projectors.append(back)
        began = asyncio.get_running_loop().time()
        async with asyncio.timeout(2):
            while (await http.get(RUNS, headers=auth("alice"))).status_code != 200:
                await asyncio.sleep(0.05)
        print(f"history back {asyncio.get_running_loop().time() - began:.3f}s after a projector")  # noqa: T201


async def test_a_hung_projector_is_skipped_after_one_timeout(
    start_gateway: GatewayFactory, projectors: list[ServiceProcess]
) -> None:
    gateway = await open_gateway(start_gateway, *(p.url for p in projectors))  # read timeout 0.5 s
    pool = gateway.app.state.runtime.projectors
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
        await listed(http, "alice", 0)
        hung = next(p for p in projectors if p.url == pool.healthy[0].url)
        hung.signal(signal.SIGSTOP)  # accepts connections (the kernel does), never answers
        try:
            seen = await list_statuses(http, 3.0)
        finally:
            hung.signal(signal.SIGCONT)
    assert {status for _, status, _ in seen} == {200}, seen
    slowest = max(latency for _, _, latency in seen)
    # After two missed probes (~1 s) no request waits for the hung one's 0.5 s timeout any more.
    settled = [latency for at, _, latency in seen if at - seen[0][0] > 1.5]
    assert slowest < 1.5 and settled and max(settled) < 0.45, seen


async def test_each_projector_folds_the_whole_log_into_its_own_file(
    start_gateway: GatewayFactory, projectors: list[ServiceProcess], runner: Runner
) -> None:
    gateway = await open_gateway(start_gateway, *(p.url for p in projectors))
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
        ids = {(await http.post(RUNS, json={**BODY, "symbol": s}, headers=auth("alice"))).json()["runId"]
               for s in ("AAPL", "MSFT", "NVDA", "AMD")}  # fmt: skip
        await runner.run_all(next(iter(ids)))
    for projector in projectors:
        async with httpx.AsyncClient(base_url=projector.url, timeout=10) as direct:
            async with asyncio.timeout(10):
                while True:
                    page = (await direct.get("/internal/runs", params={"user_id": "alice"})).json()
                    if {r["run_id"] for r in page["runs"]} == ids:
                        break
                    await asyncio.sleep(0.1)


def test_projector_urls_setting_lists_replicas_and_keeps_the_single_url() -> None:
    many = GatewaySettings.from_env(Env({"TT_PROJECTOR_URLS": "http://a:8001/, http://b:8001"}))
    assert many.projectors == ("http://a:8001", "http://b:8001")
    assert GatewaySettings.from_env(Env({"TT_PROJECTOR_URL": "http://one:8001"})).projectors == (
        "http://one:8001",
    )
    with pytest.raises(ConfigError, match="TT_PROJECTOR_URLS"):
        GatewaySettings.from_env(Env({"TT_PROJECTOR_URLS": "a:8001"}))


async def test_a_projector_only_slow_to_answer_probes_still_answers_reads(projector: ServiceProcess) -> None:
    """Probes that time out mark a projector down, but with none healthy a read still asks it (a
    late answer beats a 503 on a loaded host); one that refuses connections fails at once."""
    slow = ProjectorPool([projector.url], timeout_s=5.0, interval_s=60, probe_timeout_s=1e-6)
    gone = ProjectorPool([f"http://127.0.0.1:{free_port()}"], timeout_s=5.0, interval_s=60)
    try:
        for _ in range(MISSES_DOWN):
            await slow.probe()
        await gone.probe()
        assert slow.healthy == [] and gone.healthy == []
        answer = await slow.get("/internal/runs", {"user_id": "alice"})
        assert answer.status_code == 200 and answer.json()["runs"] == []
        began = asyncio.get_running_loop().time()
        with pytest.raises(ProjectorUnavailable):
            await gone.get("/internal/runs", {"user_id": "alice"})
        assert asyncio.get_running_loop().time() - began < 1.0, "no request is sent to a refusing one"
    finally:
        await slow.close()
        await gone.close()
