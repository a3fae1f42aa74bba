"""Where a watcher's memory goes: tracemalloc in one gateway process serving N SSE clients.

``python -m bench.watcher_memory [N] [RUNS]`` (default 1,000 clients over 100 runs, 10 a run, as
row 8 spreads them): a Redis of its own, the gateway app on uvicorn (the service's own
configuration, one process) in this process, RUNS runs submitted and started (no runner: they stay
live), then ``bench.watchers`` in a child process opens the clients; once every one has had its
replay, the allocations made since just before they connected are grouped by file. Prints bytes
per connection by file, the total, and the RSS growth per connection (tracemalloc's own overhead
included in that RSS: read the traced figure).
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import tracemalloc
from pathlib import Path

import uvicorn
from starlette.requests import Request
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from bench.common import ROOT, _own_rss_mb
from shared.events import RunRequested, RunStarted
from shared.ids import new_run_id
from shared.keys import Keys
from shared.redis_io import connect
from shared.redis_server import RedisServer, free_port
from shared.store import EventStore


class RawEvents:
    """A what-if, not the gateway's route: the events endpoint as a bare ASGI app on a Starlette
    ``Route`` (no FastAPI dependencies, exit stacks or per-route exception wrapper), to size
    what FastAPI's request machinery holds per stream."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        from services.gateway.sse import stream_events

        request = Request(scope, receive)
        runtime = request.app.state.runtime
        caller = await runtime.auth.caller(request)
        after, last = request.query_params.get("after"), request.headers.get("last-event-id")
        response = await stream_events(runtime, caller, scope["path_params"]["run_id"], after, last)
        await response(scope, receive, send)


TOP = int(os.environ.get("PROBE_TOP", "18"))


async def start_runs(store: EventStore, n: int) -> list[str]:
    runs = []
    for _ in range(n):
        run_id = new_run_id()
        await store.submit(
            RunRequested(run_id=run_id, user_id="local", symbol="ACME", model_id="sim", analysts=("market",))
        )
        started = RunStarted(run_id=run_id, runner_id="probe", attempt=1, steps=("data_collection",))
        await store.append(started, fence="probe")
        runs.append(run_id)
    return runs


async def open_clients(port: int, paths: list[str], workdir: Path) -> asyncio.subprocess.Process:
    listing = workdir / "paths.txt"
    listing.write_text("\n".join(paths))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.watchers", str(port), str(listing), cwd=ROOT,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, limit=64 * 1024 * 1024,
    )  # fmt: skip
    assert proc.stdout is not None
    assert (await asyncio.wait_for(proc.stdout.readline(), 300)).strip() == b"opened"
    return proc


def report(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot, n: int) -> None:
    stats = after.compare_to(before, os.environ.get("PROBE_GROUP", "filename"))
    total = sum(s.size_diff for s in stats)
    print(f"traced growth: {total / 1024 / 1024:.1f} MB, {total / n / 1024:.2f} KB per connection")
    for stat in stats[:TOP]:
        name = stat.traceback[0].filename.split("site-packages/")[-1].removeprefix(str(ROOT) + "/")
        line = stat.traceback[0].lineno if stat.traceback else 0
        print(f"  {stat.size_diff / n:8.0f} B  {stat.count_diff / n:6.1f} blocks  {name}:{line}")


async def probe(n: int, runs: int, redis_url: str, workdir: Path) -> None:
    os.environ.update({
        "REDIS_URL": redis_url, "TT_STATE_DIR": str(workdir / "state"), "TT_GATEWAY_WORKERS": "1",
        "TT_MAX_ACTIVE_RUNS": "0", "TT_SUBMIT_RATE": "0/min", "TT_LOG_LEVEL": "WARNING",
        "TT_PROJECTOR_URL": "http://127.0.0.1:9", "TT_PROJECTOR_TIMEOUT_S": "0.2",
    })  # fmt: skip
    from services.gateway.app import create_app
    from services.gateway.server import uvicorn_config
    from services.gateway.settings import GatewaySettings

    port = free_port()
    overrides = {
        k: os.environ[f"PROBE_{k.upper()}"] for k in ("loop", "http") if f"PROBE_{k.upper()}" in os.environ
    }
    app = create_app(GatewaySettings.from_env())
    if os.environ.get("PROBE_RAW_ROUTE") == "1":
        app.router.routes.insert(0, Route("/api/trading/runs/{run_id}/events", RawEvents()))
    server = uvicorn.Server(uvicorn_config(app, "127.0.0.1", port, **overrides))
    serving = asyncio.create_task(server.serve())
    redis = connect(redis_url)
    try:
        while not server.started:
            await asyncio.sleep(0.05)
        ids = await start_runs(EventStore(redis, Keys("tt:")), runs)
        paths = [f"/api/trading/runs/{ids[k % runs]}/events" for k in range(n)]
        warm = await open_clients(port, paths[:runs], workdir)  # every run followed, lazy imports done
        rss0 = _own_rss_mb(os.getpid())
        traced = os.environ.get("PROBE_TRACE", "1") == "1"
        if traced:
            tracemalloc.start(1)
            before = tracemalloc.take_snapshot()
        clients = await open_clients(port, paths, workdir)
        await asyncio.sleep(1.0)
        rss1 = _own_rss_mb(os.getpid())
        if traced:
            report(before, tracemalloc.take_snapshot(), n)
            tracemalloc.stop()
        print(
            f"RSS growth (tracemalloc {'on' if traced else 'off'}): {rss1 - rss0:.1f} MB, "
            f"{(rss1 - rss0) * 1024 / n:.1f} KB per connection"
        )
        for proc in (warm, clients):
            proc.terminate()
            await proc.wait()
    finally:
        server.should_exit = True
        await serving
        await redis.aclose()


def main(argv: list[str]) -> None:
    import uvloop

    n = int(argv[0]) if argv else 1000
    runs = int(argv[1]) if len(argv) > 1 else max(n // 10, 1)
    with tempfile.TemporaryDirectory() as tmp, RedisServer(Path(tmp) / "redis") as redis:
        uvloop.run(probe(n, runs, redis.url, Path(tmp)))


if __name__ == "__main__":
    main(sys.argv[1:])
