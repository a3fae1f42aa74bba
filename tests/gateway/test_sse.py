"""SSE: exact resume, clear end, 404, reset on expiry, one reader for many clients, restarts."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import subprocess
import tracemalloc
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from starlette.types import Message

from services.gateway.frames import make_frame
from services.gateway.hub import Hub, Listener
from services.gateway.runtime import open_runtime
from services.gateway.sse import EventStream, Follow
from shared.catalog import plan_steps
from shared.events import StepProgress
from shared.ids import new_run_id
from shared.keys import Keys
from shared.redis_io import connect
from shared.statedelta import merge
from shared.store import EventStore
from tests.gateway.conftest import GatewayFactory, RunningGateway, make_settings
from tests.gateway.support import BODY, RUNS, Runner, SseLog, read_sse, request_event, stream_ids


async def submit(client: httpx.AsyncClient) -> str:
    response = await client.post(RUNS, json=BODY)
    assert response.status_code == 202, response.text
    run_id: str = response.json()["runId"]
    return run_id


async def follow(
    client: httpx.AsyncClient,
    run_id: str,
    *,
    last_id: str | None = None,
    stop_after: int | None = None,
    timeout: float = 10,
) -> SseLog:
    headers = {"Last-Event-ID": last_id} if last_id else {}
    log = SseLog()
    async with (
        asyncio.timeout(timeout),
        client.stream("GET", f"{RUNS}/{run_id}/events", headers=headers) as r,
    ):
        assert r.status_code == 200, await r.aread()
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["x-accel-buffering"] == "no"
        await read_sse(r, log, stop_after=stop_after)
    return log


async def test_replay_then_live_then_end(
    client: httpx.AsyncClient, runner: Runner, redis: Redis, keys: Keys
) -> None:
    run_id = await submit(client)
    await runner.start(run_id)
    reading = asyncio.create_task(follow(client, run_id))
    await asyncio.sleep(0.3)
    for index, step in enumerate(plan_steps(("market", "risk"))):
        await runner.step(run_id, step, index)
    await runner.complete(run_id)
    log = await reading
    assert log.retry is not None and log.retry > 0
    assert log.ids == stream_ids(await redis.xrange(keys.run(run_id)))
    assert log.events[0] == "RunRequested" and log.events[-2:] == ["RunCompleted", "end"]
    last = log.messages[-2].data
    assert last["event"] == {"type": "RunCompleted"} and set(last) == {"event", "delta"}
    assert folded(log)[-2]["status"] == "completed" and folded(log)[-2]["terminal"] is True
    assert log.messages[-1].data == {"runId": run_id, "status": "completed", "lastEventId": log.ids[-1]}
    assert "state" in log.messages[0].data and set(log.messages[3].data) == {"event", "delta"}
    assert folded(log)[3]["lastEventId"] == log.ids[3]


def folded(log: SseLog) -> list[dict[str, Any]]:
    """The state after each message, as a client holds it: full states, deltas merged in."""
    states: list[dict[str, Any]] = []
    for message in log.messages:
        data = message.data
        state = data.get("state") or merge(
            states[-1] if states else {}, data.get("delta", {}), message.id or ""
        )
        states.append(state)
    return states


async def test_resume_with_last_event_id_is_exact(
    client: httpx.AsyncClient, runner: Runner, redis: Redis, keys: Keys
) -> None:
    run_id = await submit(client)
    await runner.start(run_id)
    await runner.step(run_id, "data_collection", 0)
    first = await follow(client, run_id, stop_after=3)
    for index, step in enumerate(plan_steps(("market", "risk"))[1:], start=1):
        await runner.step(run_id, step, index)
    second = await follow(client, run_id, last_id=first.ids[-1], stop_after=4)
    await runner.complete(run_id)
    third = await follow(client, run_id, last_id=second.ids[-1])
    received = first.ids + second.ids + third.ids
    assert received == stream_ids(await redis.xrange(keys.run(run_id)))
    assert len(set(received)) == len(received)
    # a resumed connection starts from a full state, then carries deltas
    assert all("state" in log.messages[0].data for log in (second, third))
    assert folded(third)[-2]["lastEventId"] == third.ids[-1]
    after_end = await follow(client, run_id, last_id=third.ids[-1])
    assert after_end.events == ["end"]


async def test_after_query_and_header_precedence(client: httpx.AsyncClient, runner: Runner) -> None:
    run_id = await submit(client)
    await runner.run_all(run_id)
    full = await follow(client, run_id)
    async with client.stream("GET", f"{RUNS}/{run_id}/events", params={"after": full.ids[2]}) as r:
        by_query = await read_sse(r, SseLog())
    assert by_query.ids == full.ids[3:]
    headers = {"Last-Event-ID": full.ids[5]}
    async with client.stream("GET", f"{RUNS}/{run_id}/events?after={full.ids[1]}", headers=headers) as r:
        by_header = await read_sse(r, SseLog())
    assert by_header.ids == full.ids[6:]


async def test_unknown_run_and_bad_cursor(client: httpx.AsyncClient) -> None:
    fresh = new_run_id()
    unknown = await client.get(f"{RUNS}/{fresh}/events")  # fresh: 404 needs no projector
    assert unknown.status_code == 404 and unknown.headers["content-type"] == "application/problem+json"
    assert fresh in unknown.json()["detail"]  # the problem names the run asked for
    malformed = await client.get(f"{RUNS}/not-a-run-id/events")
    assert malformed.status_code == 404 and "not-a-run-id" in malformed.json()["detail"]
    run_id = await submit(client)
    bad = await client.get(f"{RUNS}/{run_id}/events", headers={"Last-Event-ID": "yesterday"})
    assert bad.status_code == 422 and bad.json()["field"] == "Last-Event-ID"
    bad_query = await client.get(f"{RUNS}/{run_id}/events", params={"after": "1-0-0"})
    assert bad_query.status_code == 422 and bad_query.json()["field"] == "after"
    assert "'1-0-0' is not a stream ID" in bad_query.json()["detail"]


async def test_heartbeats_while_idle(client: httpx.AsyncClient, runner: Runner) -> None:
    run_id = await submit(client)
    await runner.start(run_id)  # two events: the hub reads them as one batch, then nothing more
    log = SseLog()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(2.5), client.stream("GET", f"{RUNS}/{run_id}/events") as r:
            await read_sse(r, log)
    assert log.events == ["RunRequested", "RunStarted"] and log.comments >= 2  # stream comment + ≥1 heartbeat


async def test_expired_run_gets_an_explicit_reset(
    client: httpx.AsyncClient, runner: Runner, redis: Redis, keys: Keys, gateway: RunningGateway
) -> None:
    run_id = await submit(client)
    await runner.run_all(run_id)
    await redis.delete(keys.run(run_id), keys.meta(run_id))  # what expiry does 48 h later
    response = await client.get(f"{RUNS}/{run_id}/events", headers={"Last-Event-ID": "1-0"})
    # no projector in this test: the read model cannot vouch for the run, so it is unknown
    assert response.status_code == 404


async def test_client_disconnect_releases_its_listener(
    client: httpx.AsyncClient, gateway: RunningGateway
) -> None:
    run_id = await submit(client)
    async with client.stream("GET", f"{RUNS}/{run_id}/events") as r:
        await read_sse(r, SseLog(), stop_after=1)
        assert gateway.app.state.runtime.hub.listeners == 1
    async with asyncio.timeout(5):
        while gateway.app.state.runtime.hub.listeners:
            await asyncio.sleep(0.05)


async def test_slow_listener_is_dropped_and_counted(
    redis_url: str, store: EventStore, keys: Keys, runner: Runner
) -> None:
    event = request_event("local")
    await store.submit(event)
    reader, commands = connect(redis_url, blocking=True), connect(redis_url)
    hub = Hub(reader, commands, EventStore(commands, keys), keys, "test-hub", block_ms=500)
    await hub.start()
    try:
        slow = await hub.join(event.run_id, "0-0", maxsize=2)
        fast = await hub.join(event.run_id, "0-0", maxsize=100)
        await runner.run_all(event.run_id)
        async with asyncio.timeout(5):
            while not any(f.final for f in fast.frames):
                await asyncio.sleep(0.02)
        assert slow.dropped and hub.dropped == 1 and not fast.dropped
        resumed = await hub.join(event.run_id, "0-0", maxsize=100)
        assert queued(resumed) == queued(fast)  # replay from memory, to the end
        for listener in (slow, fast, resumed):
            hub.leave(listener)
        assert hub.listeners == 0
    finally:
        await hub.stop()
        await reader.aclose()
        await commands.aclose()


def queued(listener: Listener) -> bytes:
    """The bytes waiting in a listener's queue, in order (the queue is left as it is)."""
    return b"".join(frame.data for frame in listener.frames)


async def gateway_connections(redis: Redis, gateway: RunningGateway) -> int:
    """Connections this gateway holds (they are named after its process id)."""
    name = f"tt-gateway:{gateway.settings.process_id}"
    return sum(1 for c in await redis.client_list() if c.get("name", "").startswith(name))


async def test_200_clients_all_get_every_event_on_a_flat_connection_count(
    start_gateway: GatewayFactory, runner: Runner, redis: Redis, keys: Keys
) -> None:
    gateway = await start_gateway(redis_pool_size=4, sse_heartbeat_s=5)
    limits = httpx.Limits(max_connections=300, max_keepalive_connections=300)
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30, limits=limits) as http:
        run_id = await submit(http)
        await runner.start(run_id)
        first = [asyncio.create_task(follow(http, run_id, timeout=60)) for _ in range(10)]
        await asyncio.sleep(0.5)
        with_ten = await gateway_connections(redis, gateway)
        rest = [asyncio.create_task(follow(http, run_id, timeout=60)) for _ in range(190)]
        async with asyncio.timeout(30):
            while gateway.app.state.runtime.hub.listeners < 200:
                await asyncio.sleep(0.05)
        with_200 = await gateway_connections(redis, gateway)
        await runner.run_all_steps(run_id)
        await runner.complete(run_id)
        logs = await asyncio.gather(*first, *rest)
    expected = stream_ids(await redis.xrange(keys.run(run_id)))
    assert all(log.ids == expected for log in logs)
    # the pool (4) and the one SSE reader, whether 10 or 200 clients listen
    assert 2 <= with_ten <= 5 and with_200 <= 5, (with_ten, with_200)


async def test_resume_across_a_gateway_restart_mid_run(
    start_gateway: GatewayFactory, runner: Runner, redis: Redis, keys: Keys
) -> None:
    first_gateway = await start_gateway()
    async with httpx.AsyncClient(base_url=first_gateway.url, timeout=10) as http:
        run_id = await submit(http)
        await runner.start(run_id)
        await runner.step(run_id, "data_collection", 0)
        seen = SseLog()
        with contextlib.suppress(httpx.HTTPError):
            async with http.stream("GET", f"{RUNS}/{run_id}/events") as r:
                await read_sse(r, seen, stop_after=3)
                stopping = asyncio.create_task(first_gateway.stop())  # the process goes away mid-stream
                await read_sse(r, seen)
        await stopping
    await runner.run_all_steps(run_id)
    await runner.complete(run_id)
    second_gateway = await start_gateway()
    async with httpx.AsyncClient(base_url=second_gateway.url, timeout=10) as http:
        rest = await follow(http, run_id, last_id=seen.ids[-1])
    received = seen.ids + rest.ids
    assert received == stream_ids(await redis.xrange(keys.run(run_id)))
    assert rest.events[-1] == "end"


async def _read_raw(sock: socket.socket, until: bytes, timeout: float = 10) -> bytes:
    """Everything the socket yields until ``until`` has arrived (the client reads at last)."""
    loop = asyncio.get_running_loop()
    received = b""
    async with asyncio.timeout(timeout):
        while until not in received:
            chunk = await loop.sock_recv(sock, 1 << 16)
            assert chunk, "the gateway closed the connection"
            received += chunk
    return received


async def test_a_client_that_stops_reading_is_cut_and_resumes_exactly(
    start_gateway: GatewayFactory, runner: Runner, store: EventStore, redis: Redis, keys: Keys
) -> None:
    gateway = await start_gateway(sse_queue_size=4)  # once the socket's buffers are full: cut
    hub = gateway.app.state.runtime.hub
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
        run_id = await submit(http)
    await runner.start(run_id)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window fills fast
    sock.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", gateway.settings.port))
        sock.send(f"GET {RUNS}/{run_id}/events HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        async with asyncio.timeout(5):
            while hub.listeners < 1:
                await asyncio.sleep(0.02)
        for k in range(400):  # up to ~8 MB of frames that nobody reads
            # a new message each time: a delta carries only what changed
            await store.append(StepProgress(run_id=run_id, step="data_collection", progress=k / 400,
                                            message=f"{k} " + "x" * 20_000), fence="f1")  # fmt: skip
            if hub.dropped:
                break
        async with asyncio.timeout(5):
            while not hub.dropped:
                await asyncio.sleep(0.02)
        assert hub.dropped == 1
        raw = await _read_raw(sock, b"reconnect with Last-Event-ID")
    finally:
        sock.close()
    async with asyncio.timeout(5):
        while hub.listeners:
            await asyncio.sleep(0.02)
    seen = [line[4:].strip().decode() for line in raw.split(b"\n") if line.startswith(b"id: ")]
    await runner.run_all_steps(run_id)
    await runner.complete(run_id)
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
        rest = await follow(http, run_id, last_id=seen[-1])
    expected = stream_ids(await redis.xrange(keys.run(run_id)))
    assert seen + rest.ids == expected


async def test_twenty_clients_resuming_mid_run_each_get_the_rest_and_the_end(
    start_gateway: GatewayFactory, runner: Runner, redis: Redis, keys: Keys
) -> None:
    gateway = await start_gateway(http="h11")  # any ASGI server's HTTP: nothing server-specific
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
        run_id = await submit(http)
        await runner.start(run_id)
        first = await follow(http, run_id, stop_after=2)
        readers = [asyncio.create_task(follow(http, run_id, last_id=first.ids[-1])) for _ in range(20)]
        await runner.run_all_steps(run_id)
        await runner.complete(run_id)
        logs = await asyncio.gather(*readers)
    expected = stream_ids(await redis.xrange(keys.run(run_id)))
    assert all(first.ids + log.ids == expected and log.events[-1] == "end" for log in logs)


async def test_a_run_cancelled_while_queued_ends_its_stream(client: httpx.AsyncClient) -> None:
    """No runner confirms a cancel of a run that never started: the cancel itself ends it, for
    a client following live and for one resuming after the cancel."""
    run_id = await submit(client)
    live = asyncio.create_task(follow(client, run_id))
    await asyncio.sleep(0.3)
    cancelled = await client.delete(f"{RUNS}/{run_id}")
    assert cancelled.status_code == 202 and cancelled.json()["status"] == "cancelled"
    log = await live
    assert log.events == ["RunRequested", "RunCancelled", "end"]
    assert log.messages[-1].data == {"runId": run_id, "status": "cancelled", "lastEventId": log.ids[-1]}
    resumed = await follow(client, run_id, last_id=log.ids[-1])
    assert resumed.events == ["end"]


CLIENT_JS = Path(__file__).resolve().parents[2] / "services/gateway/static/tickertape-client.js"
FOLD_JS = """
import { readFileSync } from "fs";
const { mergeDelta } = await import(process.argv[1]);
let state = null;
const states = [];
for (const m of JSON.parse(readFileSync(0, "utf8"))) {
  state = m.data.state ?? mergeDelta(state, m.data.delta, m.id);
  states.push(state);
}
console.log(JSON.stringify(states));
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="the browser client's fold runs on node")
async def test_the_browser_client_folds_a_stream_into_the_states_the_server_holds(
    client: httpx.AsyncClient, runner: Runner
) -> None:
    run_id = await submit(client)
    await runner.run_all(run_id)
    log = await follow(client, run_id)
    events = [{"id": m.id, "data": m.data} for m in log.messages if m.event != "end"]
    script = FOLD_JS.replace("require_stdin()", "require('fs').readFileSync(0, 'utf8')")
    script = (
        "import { createRequire } from 'module'; const require = createRequire(import.meta.url);\n" + script
    )
    done = subprocess.run(
        ["node", "--input-type=module", "-e", FOLD_JS, str(CLIENT_JS)],
        input=json.dumps(events), capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    assert json.loads(done.stdout) == folded(log)[: len(events)]


async def test_frames_queued_behind_a_slow_send_go_out_as_one_write_up_to_the_end() -> None:
    """The listener's drain: what is already queued goes out as one write, in order, and stops at
    the end frame (what follows it is not sent). Deterministic here: over HTTP the queue holds
    more than one frame only when the client is slower than the hub."""
    listener = Listener("run", "0-0", maxsize=10)
    one, two, end, late = (make_frame(f"{n}-0", "e", f"f{n};".encode()) for n in (1, 2, 3, 4))
    end.final = True
    listener.frames.append(one)
    assert await listener.drain() == (b"f1;", False)  # nothing else queued: the frame alone
    listener.frames.extend((one, two, end, late))
    assert await listener.drain() == (b"f1;f2;f3;", True)
    assert list(listener.frames) == [late]  # the frame after the end stays unsent


async def test_a_runs_end_is_written_to_every_client_before_any_stream_is_torn_down(
    redis: Redis, redis_url: str, state_dir: Path, store: EventStore, runner: Runner
) -> None:
    """All of a run's clients wake at its end: each writes its last frame before any of them runs
    the request's teardown (which would otherwise come between one client's end and the next's)."""
    event = request_event("local")
    await store.submit(event)
    held_at_end: list[int] = []
    async with open_runtime(make_settings(redis_url, state_dir)) as runtime:

        async def send(message: Message) -> None:
            if message["type"] == "http.response.body" and not message["more_body"]:
                held_at_end.append(runtime.hub.listeners)

        async def receive() -> Message:
            await asyncio.Event().wait()  # the clients never hang up
            return {"type": "http.disconnect"}

        streams = [EventStream(Follow(runtime, event.run_id, "0-0", None, "local")) for _ in range(3)]
        tasks = [asyncio.create_task(s({"type": "http"}, receive, send)) for s in streams]
        while runtime.hub.listeners < 3:
            await asyncio.sleep(0.01)
        await runner.run_all(event.run_id)
        async with asyncio.timeout(10):
            await asyncio.gather(*tasks)
    assert held_at_end == [3, 3, 3]


async def test_a_waiting_client_holds_no_copy_of_what_it_was_sent(
    redis: Redis, redis_url: str, state_dir: Path, store: EventStore, runner: Runner
) -> None:
    """A client joining mid-run is sent its replay as bytes of its own (its first frame carries the
    full state); once written, a stream waiting for the next frame keeps none of it: with
    thousands of watchers, a replay each would be most of the gateway's memory."""
    event = request_event("local")
    await store.submit(event)
    await runner.start(event.run_id)
    await runner.run_all_steps(event.run_id)
    sent: list[int] = []
    async with open_runtime(make_settings(redis_url, state_dir)) as runtime:

        async def send(message: Message) -> None:
            if message["type"] == "http.response.body" and len(message["body"]) > 1000:
                sent.append(len(message["body"]))

        async def receive() -> Message:
            await asyncio.Event().wait()
            return {"type": "http.disconnect"}

        def follow() -> asyncio.Task[None]:
            stream = EventStream(Follow(runtime, event.run_id, "0-0", None, "local"))
            return asyncio.create_task(stream({"type": "http"}, receive, send))

        async def replayed(n: int) -> None:
            async with asyncio.timeout(10):
                while len(sent) < n:
                    await asyncio.sleep(0.01)

        tasks = [follow()]  # the hub reads and folds the run for this one
        await replayed(1)
        tracemalloc.start()
        try:
            tasks += [follow() for _ in range(50)]
            await replayed(51)
            await asyncio.sleep(0.05)
            grown, _ = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    assert grown / 50 < sent[0], (grown / 50, sent[0])  # ~0.6 of a replay: the stream itself
