"""SSE fan-out: delivery latency, Redis connections and RSS for 1, 100 and 1000 clients on one gateway.

One gateway (``python -m services.gateway``, as ``tickertape up`` starts it: by default a supervisor
and a worker per CPU, ``TT_GATEWAY_WORKERS``) on loopback, its own Redis. For each size,
N raw SSE clients follow one run. The clients live in client processes of their own (up to
``MAX_CLIENT_PROCS``, each holding a share of the connections, on uvloop with a bare
``asyncio.Protocol`` so a client costs little CPU); this process only appends the runner's
events through ``EventStore.append`` (the real write path), stamping ``time.time()`` just before
each append. A client stamps ``time.time()`` when the bytes holding a frame's ``id:`` line arrive
(same machine, same clock). Latency is the difference, for every client and every live event.
Redis connections are the gateway's own (they carry its process id in CLIENT NAME), sampled
while all N clients listen; RSS is the gateway's at that moment (its processes' summed). "CPU
us/frame" is the gateway's CPU time (all its processes) during the live phase over the frames
delivered (fixed costs dominate it at 1 client).

    .venv/bin/python -m bench.sse_fanout           # 1, 100, 1000 clients, BENCH_REPS (3) rounds each
    BENCH_QUICK=1 .venv/bin/python -m bench.sse_fanout
    BENCH_SSE_SIZES=1000 BENCH_REPS=1 .venv/bin/python -m bench.sse_fanout
    BENCH_SSE_SIZES=1000 .venv/bin/python -m bench.sse_fanout --compare REV   # REV's gateway alternating
    .venv/bin/python -m bench.sse_fanout clients PORT PATH N   # one client process (internal)
"""

from __future__ import annotations

import asyncio
import functools
import gc
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.common import cpu_seconds, export, percentile, quick, reps, rss_mb, summarize
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
CLIENTS_PER_PROC = 250
MAX_CLIENT_PROCS = 4


# ---------------------------------------------------------------- a client process


class SseClient:
    """One connection; records ``time.time()`` when each ``id:`` line arrives.

    A chunk is stamped on arrival and kept; its lines are split after the round (``arrivals``),
    each ``id:`` line getting the stamp of the chunk that completed it: the same figures as
    splitting on arrival, at less CPU per chunk while the gateway is still writing to the others.
    Until the first ``id:`` line (the replay) chunks are split at once, to signal ``opened``.
    """

    def __init__(self, path: str, signals: dict[str, asyncio.Event], tally: dict[str, int]) -> None:
        self.path, self.signals, self.tally = path, signals, tally
        self.chunks: list[tuple[float, bytes]] = []
        self.last = b""
        self.opened = self.ended = False

    def request(self) -> bytes:
        return f"GET {self.path} HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n\r\n".encode()

    def feed(self, data: bytes) -> None:
        self.chunks.append((time.time(), data))
        if not self.opened and arrivals(self.chunks):
            self._mark("opened")
        if END in data or END in self.last + data[: len(END)]:
            self._mark("ended")
        self.last = (self.last + data[-len(END) :])[-len(END) :]  # the bytes an END may start in

    def _mark(self, what: str) -> None:
        if getattr(self, what):
            return
        setattr(self, what, True)
        self.tally[what] += 1
        if self.tally[what] == self.tally["n"]:
            self.signals[what].set()


END = b"\nevent: end"
"""The end frame's ``event:`` line (after its chunk-size line, so always after a newline)."""


def arrivals(chunks: list[tuple[float, bytes]]) -> list[tuple[str, float]]:
    """Each ``id:`` line with the stamp of the chunk that completed it."""
    received, tail = [], b""
    for stamp, data in chunks:
        lines = (tail + data).split(b"\n")
        tail = lines.pop()
        received += [(line[4:].strip().decode(), stamp) for line in lines if line.startswith(b"id: ")]
    return received


class _Protocol(asyncio.Protocol):
    def __init__(self, client: SseClient) -> None:
        self.client = client

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(self.client.request())  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self.client.feed(data)


async def run_clients(port: int, path: str, n: int) -> None:
    """Open ``n`` clients; print ``opened`` once all follow, then at the end, as JSON, their
    arrivals and this process's CPU seconds and chunks received from ``opened`` to the end."""
    loop = asyncio.get_running_loop()
    signals = {"opened": asyncio.Event(), "ended": asyncio.Event()}
    tally = {"n": n, "opened": 0, "ended": 0}
    clients = [SseClient(path, signals, tally) for _ in range(n)]
    transports = []
    for client in clients:
        transport, _ = await loop.create_connection(functools.partial(_Protocol, client), "127.0.0.1", port)
        transports.append(transport)
    async with asyncio.timeout(ROUND_TIMEOUT_S):
        await signals["opened"].wait()
        cpu, chunks = time.process_time(), sum(len(c.chunks) for c in clients)
        print("opened", flush=True)
        await signals["ended"].wait()
        cpu, chunks = time.process_time() - cpu, sum(len(c.chunks) for c in clients) - chunks
        # Hold still until every client process has seen the end: closing sockets and splitting
        # chunks here would take CPU from the gateway while it still writes the end to the others.
        print("ended", flush=True)
        await loop.run_in_executor(None, sys.stdin.readline)
    for transport in transports:
        transport.close()
    received = [arrivals(c.chunks) for c in clients]
    print(json.dumps({"received": received, "cpu_s": cpu, "chunks": chunks}), flush=True)


def clients_main(port: int, path: str, n: int) -> None:
    """A client process is a measuring instrument: its collector is off for its one round (it
    allocates a few MB and exits). With it on, a full collection ~0.5 s into the live phase
    paused every client of the process for ~20 ms, and that pause, not the gateway, was the p99
    at 100 clients (per-event arrivals showed one event late for every client by the same ~21 ms;
    with the gateway's collector off it stayed, with the clients' off it went)."""
    import uvloop

    gc.disable()
    uvloop.run(run_clients(port, path, n))


# ---------------------------------------------------------------- the gateway and one round


def gateway_env(redis_url: str, state: Path, port: int, process_id: str = PROCESS_ID) -> dict[str, str]:
    """The gateway's settings for this bench: one user sends everything, no projector needed."""
    return {
        "REDIS_URL": redis_url,
        "TT_STATE_DIR": str(state),
        "TT_GATEWAY_PORT": str(port),
        "TT_GATEWAY_PROCESS_ID": process_id,
        "TT_MAX_ACTIVE_RUNS": "0",
        "TT_SUBMIT_RATE": "0/min",
        "TT_LOG_LEVEL": "WARNING",
        "TT_PROJECTOR_URL": "http://127.0.0.1:9",
        "TT_PROJECTOR_TIMEOUT_S": "0.2",
    }


def start_gateway(
    redis_url: str, state: Path, port: int, root: Path = ROOT, process_id: str = PROCESS_ID
) -> subprocess.Popen[bytes]:
    """``python -m services.gateway`` from the tree at ``root`` (another revision's, for --compare)."""
    env = {**os.environ, **gateway_env(redis_url, state, port, process_id)}
    log = (state / f"gateway-{process_id}.log").open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "services.gateway"], env=env, cwd=root, stdout=log, stderr=log
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


async def gateway_connections(store: EventStore, process_id: str = PROCESS_ID) -> int:
    """The gateway's Redis connections: its own, or its workers' (``{process_id}-w{k}``)."""
    clients = await store.redis.client_list()
    own = re.compile(rf"tt-gateway:{re.escape(process_id)}(-w\d+)?(:sse)?")
    return sum(1 for c in clients if own.fullmatch(c.get("name", "")))


def shares(n: int) -> list[int]:
    """How many clients each client process holds."""
    procs = max(1, min(MAX_CLIENT_PROCS, math.ceil(n / CLIENTS_PER_PROC)))
    return [n // procs + (1 if k < n % procs else 0) for k in range(procs)]


async def spawn_clients(port: int, path: str, n: int) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.sse_fanout", "clients", str(port), path, str(n),
        cwd=ROOT, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        limit=64 * 1024 * 1024,
    )  # fmt: skip


async def expect_line(process: asyncio.subprocess.Process) -> bytes:
    assert process.stdout is not None
    line = await process.stdout.readline()
    if not line:
        raise RuntimeError(f"a client process ended early (exit {await process.wait()})")
    return line


async def start_run(url: str, store: EventStore) -> str:
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        posted = await http.post("/api/trading/runs", json={"symbol": "BENCH", "analysts": ["market"]})
    run_id: str = posted.json()["runId"]
    await store.append(RunStarted(run_id=run_id, runner_id="bench", attempt=1, steps=("data_collection",)),
                       fence="bench")  # fmt: skip
    return run_id


async def one_round(
    url: str, port: int, store: EventStore, n: int, pid: int | None = None, process_id: str = PROCESS_ID
) -> dict[str, float]:
    """N clients (in client processes) follow one run while this process appends its events."""
    run_id = await start_run(url, store)
    path = f"/api/trading/runs/{run_id}/events"
    procs = [await spawn_clients(port, path, k) for k in shares(n)]
    try:
        async with asyncio.timeout(ROUND_TIMEOUT_S):
            for proc in procs:
                assert (await expect_line(proc)).strip() == b"opened"
            connections = await gateway_connections(store, process_id)
            rss = rss_mb(pid) if pid else float("nan")
            cpu = cpu_seconds(pid) if pid else float("nan")
            sent = await append_events(store, run_id)
            for proc in procs:
                assert (await expect_line(proc)).strip() == b"ended"
            for proc in procs:
                assert proc.stdin is not None
                proc.stdin.write(b"report\n")
            reports = [json.loads(await expect_line(proc)) for proc in procs]
            cpu = (cpu_seconds(pid) - cpu) if pid else float("nan")
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
    row = summarize_round(sent, [c for r in reports for c in r["received"]], connections, rss)
    row["cpu_us_per_frame"] = cpu * 1e6 / max(row["frames"], 1)
    chunks = sum(r["chunks"] for r in reports)
    row["client_cpu_us_per_chunk"] = sum(r["cpu_s"] for r in reports) * 1e6 / max(chunks, 1)
    return row


def summarize_round(
    sent: dict[str, float], arrivals: list[list[list[Any]]], connections: int, rss: float
) -> dict[str, float]:
    latencies, missing = [], 0
    for received in arrivals:
        seen = {i: t for i, t in received}
        latencies += [(seen[i] - t) * 1000 for i, t in sent.items() if i in seen]
        missing += sum(1 for i in sent if i not in seen)
    return {"p50": percentile(latencies, 50), "p99": percentile(latencies, 99),
            "connections": connections, "missing": missing, "frames": len(latencies),
            "rss_mb": rss}  # fmt: skip


async def append_events(store: EventStore, run_id: str) -> dict[str, float]:
    """The runner's part: append the run's live events, each stamped just before its append.

    Between the stamp and the append's arrival in Redis only this process runs; its collector
    is held off for the second this takes (collected before), so a full collection of the bench's
    own heap (every bench module is loaded under ``python -m bench``) is not counted as delivery
    latency: the same reasoning as for the client processes (``clients_main``).
    """
    gc.collect()
    gc.disable()
    try:
        return await _append_events(store, run_id)
    finally:
        gc.enable()


async def _append_events(store: EventStore, run_id: str) -> dict[str, float]:
    sent: dict[str, float] = {}
    for k in range(EVENTS):
        event = StepProgress(run_id=run_id, step="data_collection", progress=k / EVENTS)
        stamp = time.time()
        sent[await store.append(event, fence="bench")] = stamp
        await asyncio.sleep(PACE_S)
    event_end = RunCompleted(run_id=run_id)
    stamp = time.time()
    sent[await store.append(event_end, fence="bench")] = stamp
    return sent


# ---------------------------------------------------------------- the table


def sizes_to_run() -> tuple[int, ...]:
    """1, 100, 1000 clients (BENCH_SSE_SIZES=1000 for one size while profiling)."""
    raw = os.environ.get("BENCH_SSE_SIZES", "")
    if raw:
        return tuple(int(x) for x in raw.split(","))
    return (1, 20, 100) if quick() else (1, 100, 1000)


def cell(values: list[float], digits: int = 1) -> str:
    lo, mid, hi = summarize(values)
    return f"{mid:.{digits}f} [{lo:.{digits}f}-{hi:.{digits}f}]"


def print_rows(found: dict[int, list[dict[str, float]]]) -> None:
    print(f"{'clients':>8} {'p50 ms':>20} {'p99 ms':>20} {'missing':>8} {'redis conns':>12} {'RSS MB':>20} "
          f"{'CPU us/frame':>20} {'client us/chunk':>20}")  # fmt: skip
    for n, rounds in found.items():
        col = {k: [r[k] for r in rounds] for k in rounds[0]}
        cpu, client = cell(col["cpu_us_per_frame"]), cell(col["client_cpu_us_per_chunk"])
        print(f"{n:>8} {cell(col['p50']):>20} {cell(col['p99']):>20} {sum(col['missing']):>8.0f} "
              f"{cell(col['connections'], 0):>12} {cell(col['rss_mb']):>20} {cpu:>20} "
              f"{client:>20}")  # fmt: skip


@dataclass(frozen=True, slots=True)
class Variant:
    """One gateway under test: the working tree's, or another revision's (``--compare``)."""

    name: str
    root: Path
    process_id: str


async def bench(redis_url: str, state: Path, compare: str | None = None) -> None:
    """Each size, BENCH_REPS rounds; with ``compare``, that revision's gateway round by round in
    alternation with the working tree's (both processes up all along, one idle at a time)."""
    variants = [Variant("working tree", ROOT, PROCESS_ID)]
    if compare:
        variants.insert(0, Variant(compare, export(compare, state / "ref"), f"{PROCESS_ID}-ref"))
    ports = [free_port() for _ in variants]
    gateways = [
        start_gateway(redis_url, state, port, v.root, v.process_id)
        for v, port in zip(variants, ports, strict=True)
    ]
    redis = connect(redis_url)
    store = EventStore(redis, Keys("tt:"))
    sizes = sizes_to_run()
    found: dict[str, dict[int, list[dict[str, float]]]] = {v.name: {n: [] for n in sizes} for v in variants}
    try:
        for gateway, port in zip(gateways, ports, strict=True):
            await wait_healthy(f"http://127.0.0.1:{port}", gateway)
        for _ in range(reps()):
            for n in sizes:
                for v, gateway, port in zip(variants, gateways, ports, strict=True):
                    row = await one_round(
                        f"http://127.0.0.1:{port}", port, store, n, gateway.pid, v.process_id
                    )
                    found[v.name][n].append(row)
    finally:
        for gateway in gateways:
            gateway.terminate()
            gateway.wait(15)
        await redis.aclose()
    pace = f"{PACE_S * 1000:.0f} ms apart"
    workers = os.environ.get("TT_GATEWAY_WORKERS", "default")
    print(f"SSE fan-out on one gateway (TT_GATEWAY_WORKERS {workers}; {EVENTS + 1} live events a run, "
          f"{pace}; clients in {MAX_CLIENT_PROCS} processes at most; median [min-max] of {reps()}; "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())})")  # fmt: skip
    for name, rows in found.items():
        if compare:
            print(f"-- {name}")
        print_rows(rows)


def main(argv: list[str]) -> None:
    if argv and argv[0] == "clients":
        clients_main(int(argv[1]), argv[2], int(argv[3]))
        return
    compare = argv[1] if len(argv) == 2 and argv[0] == "--compare" else None
    with ExitStack() as stack:
        state = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tt-sse-bench-")))
        redis_url = os.environ.get("REDIS_URL") or stack.enter_context(RedisServer(state / "redis")).url
        asyncio.run(bench(redis_url, state, compare))


if __name__ == "__main__":
    main(sys.argv[1:])
