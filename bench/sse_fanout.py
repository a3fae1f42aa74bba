"""SSE fan-out: delivery latency and Redis connections for 1, 100 and 1000 clients on one gateway.

One gateway process (``python -m services.gateway``) on loopback, its own Redis. For each size, N
raw SSE clients follow one run; this process then appends the runner's events through
``EventStore.append`` (the real write path), stamping the time before each append. Latency is
from that stamp to the moment a client reads the frame. Redis connections are the gateway's own
(they carry its process id in CLIENT NAME), sampled while all N clients listen.

    .venv/bin/python -m bench.sse_fanout           # 1, 100, 1000 clients
    BENCH_QUICK=1 .venv/bin/python -m bench.sse_fanout
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.common import percentile, quick
from shared.events import RunCompleted, RunStarted, StepProgress
from shared.keys import Keys
from shared.redis_io import connect
from shared.redis_server import RedisServer, free_port
from shared.store import EventStore

ROOT = Path(__file__).resolve().parents[1]
PROCESS_ID = "bench-fanout"
EVENTS = 20
PACE_S = 0.05
ROUND_TIMEOUT_S = 90.0


@dataclass
class Client:
    received: dict[str, float] = field(default_factory=dict)
    ended: bool = False
    opened: bool = False


async def follow(port: int, path: str, client: Client) -> None:
    """A minimal SSE client: one GET, then scan the byte stream for ``id:`` lines."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n\r\n".encode())
        await writer.drain()
        while not client.ended:
            line = await reader.readline()
            if not line:
                return
            now = time.perf_counter()
            if line.startswith(b"id: "):
                client.received[line[4:].strip().decode()] = now
                client.opened = True
            elif line.startswith(b"event: end"):
                client.ended = True
    finally:
        writer.close()


def start_gateway(redis_url: str, state: Path, port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "TT_STATE_DIR": str(state),
        "TT_GATEWAY_PORT": str(port),
        "TT_GATEWAY_PROCESS_ID": PROCESS_ID,
        "TT_MAX_ACTIVE_RUNS": "0",
        "TT_SUBMIT_RATE": "0/min",
        "TT_LOG_LEVEL": "WARNING",
        "TT_PROJECTOR_URL": "http://127.0.0.1:9",
        "TT_PROJECTOR_TIMEOUT_S": "0.2",
    }
    log = (state / "gateway.log").open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "services.gateway"], env=env, cwd=ROOT, stdout=log, stderr=log
    )


async def wait_healthy(url: str, process: subprocess.Popen[bytes]) -> None:
    async with httpx.AsyncClient(timeout=1) as http:
        for _ in range(400):
            if process.poll() is not None:
                raise RuntimeError(f"gateway exited with {process.returncode}")
            try:
                if (await http.get(f"{url}/healthz")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.05)
    raise TimeoutError("gateway not healthy")


async def gateway_connections(store: EventStore) -> int:
    clients = await store.redis.client_list()
    return sum(1 for c in clients if c.get("name", "").startswith(f"tt-gateway:{PROCESS_ID}"))


async def one_round(url: str, port: int, store: EventStore, n: int) -> dict[str, float]:
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        posted = await http.post("/api/trading/runs", json={"symbol": "BENCH", "analysts": ["market"]})
    run_id = posted.json()["runId"]
    await store.append(RunStarted(run_id=run_id, runner_id="bench", attempt=1, steps=("data_collection",)),
                       fence="bench")  # fmt: skip
    clients = [Client() for _ in range(n)]
    path = f"/api/trading/runs/{run_id}/events"
    tasks = [asyncio.create_task(follow(port, path, c)) for c in clients]
    try:
        async with asyncio.timeout(ROUND_TIMEOUT_S):
            while not all(c.opened for c in clients):
                await asyncio.sleep(0.05)
            connections = await gateway_connections(store)
            sent = await append_events(store, run_id)
            while not all(c.ended for c in clients):
                await asyncio.sleep(0.05)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    latencies = [(c.received[i] - t) * 1000 for c in clients for i, t in sent.items() if i in c.received]
    missing = sum(1 for c in clients for i in sent if i not in c.received)
    return {"p50": percentile(latencies, 50), "p99": percentile(latencies, 99),
            "connections": connections, "missing": missing, "frames": len(latencies)}  # fmt: skip


async def append_events(store: EventStore, run_id: str) -> dict[str, float]:
    sent: dict[str, float] = {}
    for k in range(EVENTS):
        stamp = time.perf_counter()
        event = StepProgress(run_id=run_id, step="data_collection", progress=k / EVENTS)
        sent[await store.append(event, fence="bench")] = stamp
        await asyncio.sleep(PACE_S)
    stamp = time.perf_counter()
    sent[await store.append(RunCompleted(run_id=run_id), fence="bench")] = stamp
    return sent


async def bench(redis_url: str, state: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    gateway = start_gateway(redis_url, state, port)
    redis = connect(redis_url)
    store = EventStore(redis, Keys("tt:"))
    try:
        await wait_healthy(url, gateway)
        sizes = (1, 20, 100) if quick() else (1, 100, 1000)
        pace = f"{PACE_S * 1000:.0f} ms apart"
        print(f"SSE fan-out on one gateway process ({EVENTS + 1} live events a run, {pace})")
        print(f"{'clients':>8} {'p50 ms':>9} {'p99 ms':>9} {'frames':>8} {'missing':>8} {'redis conns':>12}")
        for n in sizes:
            row = await one_round(url, port, store, n)
            print(f"{n:>8} {row['p50']:>9.2f} {row['p99']:>9.2f} {row['frames']:>8.0f} "
                  f"{row['missing']:>8.0f} {row['connections']:>12.0f}")  # fmt: skip
    finally:
        gateway.terminate()
        gateway.wait(15)
        await redis.aclose()


def main() -> None:
    with ExitStack() as stack:
        state = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tt-sse-bench-")))
        redis_url = os.environ.get("REDIS_URL") or stack.enter_context(RedisServer(state / "redis")).url
        asyncio.run(bench(redis_url, state))


if __name__ == "__main__":
    main()
