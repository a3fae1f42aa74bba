"""Row 1: ``POST /api/trading/runs`` on one gateway process against the ceiling of the same stack.

The ceiling is a minimal FastAPI app doing one XADD per request, served by uvicorn with the
gateway's own settings. Both are loaded, in alternation, by the same loopback load generator in
a process of its own (raw HTTP/1.1 keep-alive over asyncio streams on uvloop: a lighter client
than httpx, so the generator is less of the limit).

Stand-alone::

    python -m bench.submit_bench                          # starts its own Redis, prints rows
    python -m bench.submit_bench ceiling PORT REDIS_URL [bare]  # serve a ceiling app
    python -m bench.submit_bench load URL SECONDS CONNS   # one load run; prints JSON
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from bench.common import Child, Row, median, percentile, port, quick, reps, run_json
from shared.redis_io import connect
from shared.redis_server import RedisServer
from tests.support.processes import ServiceProcess

PATH = "/api/trading/runs"
BODY = json.dumps({"symbol": "AAPL", "analysts": ["market"], "pipeline": "noop", "join": False}).encode()
"""``join: false``: every submit records a run (identical submits would otherwise join the first)."""
GOAL_RATIO = 0.6
"""Issue 14's bound for a submit through FastAPI's route alone (issue 10 asked 0.8 of a path that
skipped FastAPI; docs/benchmarks.md, row 1)."""


# ---------------------------------------------------------------- the ceiling app


def ceiling_app(redis_url: str) -> FastAPI:
    """POST /api/trading/runs → one XADD, 202 with a run id; nothing else."""
    clients: dict[str, Any] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        clients["redis"] = connect(redis_url)
        yield
        await clients["redis"].aclose()

    app = FastAPI(lifespan=lifespan)

    @app.post(PATH, status_code=202)
    async def submit(request: Request) -> JSONResponse:
        body = await request.body()
        run_id = secrets.token_hex(8)
        await clients["redis"].xadd("ceiling:queue", {"r": run_id, "b": body})
        return JSONResponse({"runId": run_id, "status": "pending"}, status_code=202)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def bare_app(redis_url: str) -> Any:
    """The same XADD with no framework at all: a plain ASGI callable (a stricter ceiling, shown
    beside the issue's, for what the framework costs; the gateway's POST /runs is a FastAPI route)."""
    clients: dict[str, Any] = {}
    head = [(b"content-type", b"application/json")]

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await receive()  # lifespan.startup
            clients["redis"] = connect(redis_url)
            await send({"type": "lifespan.startup.complete"})
            await receive()  # lifespan.shutdown
            await clients["redis"].aclose()
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["path"] == "/healthz":
            ok = b'{"status":"ok"}'
            await send(
                {"type": "http.response.start", "status": 200, "headers": [*head, (b"content-length", b"15")]}
            )
            await send({"type": "http.response.body", "body": ok})
            return
        body, more = b"", True
        while more:
            message = await receive()
            body, more = body + message.get("body", b""), message.get("more_body", False)
        run_id = secrets.token_hex(8)
        await clients["redis"].xadd("ceiling:queue", {"r": run_id, "b": body})
        answer = json.dumps({"runId": run_id, "status": "pending"}).encode()
        length = [(b"content-length", str(len(answer)).encode())]
        await send({"type": "http.response.start", "status": 202, "headers": head + length})
        await send({"type": "http.response.body", "body": answer})

    return app


def serve_ceiling(listen_port: int, redis_url: str, kind: str = "fastapi") -> None:
    """Same uvicorn settings as ``python -m services.gateway``."""
    import uvicorn

    app = bare_app(redis_url) if kind == "bare" else ceiling_app(redis_url)
    config = uvicorn.Config(
        app, host="127.0.0.1", port=listen_port, log_config=None, access_log=False,
        proxy_headers=True, timeout_graceful_shutdown=5,
    )  # fmt: skip
    uvicorn.Server(config).run()


# ---------------------------------------------------------------- the load generator


def _request(host: str, port_: int) -> bytes:
    head = (
        f"POST {PATH} HTTP/1.1\r\nHost: {host}:{port_}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(BODY)}\r\n\r\n"
    )
    return head.encode() + BODY


async def _response(reader: asyncio.StreamReader) -> int:
    """Reads one response (Content-Length framed); returns its status code."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    if length:
        await reader.readexactly(length)
    return status


async def _connection(host: str, port_: int, until: float, warm_until: float, out: dict[str, Any]) -> None:
    reader, writer = await asyncio.open_connection(host, port_)
    request, clock = _request(host, port_), time.perf_counter
    try:
        while (start := clock()) < until:
            writer.write(request)
            status = await _response(reader)
            if start < warm_until:
                continue
            out["lat"].append(clock() - start)
            out["status"][status] = out["status"].get(status, 0) + 1
    finally:
        writer.close()


async def load(url: str, seconds: float, conns: int, warmup_s: float) -> dict[str, Any]:
    """``conns`` keep-alive connections, each one request at a time; rates after the warm-up."""
    host, _, port_text = url.removeprefix("http://").partition(":")
    out: dict[str, Any] = {"lat": [], "status": {}}
    began = time.perf_counter()
    warm_until = began + warmup_s
    until = warm_until + seconds
    await asyncio.gather(*(_connection(host, int(port_text), until, warm_until, out) for _ in range(conns)))
    lat: list[float] = out["lat"]
    ok = out["status"].get(202, 0)
    return {
        "requests": len(lat),
        "accepted": ok,
        "statuses": {str(k): v for k, v in out["status"].items()},
        "rps": ok / seconds,
        "p50_ms": percentile(lat, 50) * 1000,
        "p99_ms": percentile(lat, 99) * 1000,
    }


def load_main(url: str, seconds: float, conns: int, warmup_s: float) -> None:
    import uvloop

    print(json.dumps(uvloop.run(load(url, seconds, conns, warmup_s))))


# ---------------------------------------------------------------- the measurement


def gateway_env(redis_url: str, workdir: Path) -> dict[str, str]:
    """Shipped defaults, except no per-user cap and no rate limit (one user sends everything), and
    one worker process: the ceiling is one uvicorn process, so the ratio compares like with like."""
    return {
        "REDIS_URL": redis_url,
        "TT_GATEWAY_WORKERS": "1",
        "TT_PREFIX": "sb:",
        "TT_STATE_DIR": str(workdir / "gateway"),
        "TT_MAX_ACTIVE_RUNS": "0",
        "TT_SUBMIT_RATE": "0/min",
        "TT_PROJECTOR_URL": f"http://127.0.0.1:{port()}",
    }


def one_load(url: str, seconds: float, conns: int) -> dict[str, Any]:
    args = ["load", url, str(seconds), str(conns), str(min(1.0, seconds / 3))]
    return run_json("bench.submit_bench", args, timeout_s=seconds + 60)


def measure(redis_url: str, workdir: Path, n_reps: int | None = None) -> list[Row]:
    """Gateway and ceiling, loaded alternately ``n_reps`` times each in this one run."""
    n_reps = n_reps or reps()
    seconds, conns = (1.0, 8) if quick() else (5.0, 32)
    gateway = ServiceProcess("gateway", gateway_env(redis_url, workdir), log_dir=workdir / "logs")
    ports = {"ceiling": port(), "bare": port()}
    ceilings = {
        name: Child("bench.submit_bench", ["ceiling", str(p), redis_url, "bare" if name == "bare" else ""],
                    workdir / "logs" / f"{name}.log")
        for name, p in ports.items()
    }  # fmt: skip
    results: dict[str, list[dict[str, Any]]] = {"gateway": [], "ceiling": [], "bare": []}
    try:
        gateway.start(timeout_s=30.0)
        for name, child in ceilings.items():
            child.start().wait_http(f"http://127.0.0.1:{ports[name]}/healthz")
        targets = {"gateway": gateway.url, **{name: f"http://127.0.0.1:{p}" for name, p in ports.items()}}
        for _ in range(n_reps):
            for name, url in targets.items():
                results[name].append(one_load(url, seconds, conns))
    finally:
        for child in ceilings.values():
            child.stop()
        gateway.stop()
    return rows(results, conns)


def rows(results: dict[str, list[dict[str, Any]]], conns: int) -> list[Row]:
    g, c, bare = results["gateway"], results["ceiling"], results.get("bare", [])
    ratios = [a["rps"] / b["rps"] for a, b in zip(g, c, strict=True) if b["rps"]]
    bare_ratios = [a["rps"] / b["rps"] for a, b in zip(g, bare, strict=True) if b["rps"]]
    errors = sum(r["requests"] - r["accepted"] for r in g)
    note = f"{conns} connections" + (f", {errors} non-202" if errors else "")
    goal = f">= {GOAL_RATIO:.0%} of ceiling"
    return [
        Row("1 submit", "gateway POST /runs", "req/s", [r["rps"] for r in g], note=note),
        Row("1 submit", "gateway p50 / p99 latency", "ms", [r["p50_ms"] for r in g],
            note=f"p99 {median([r['p99_ms'] for r in g]):.1f} ms"),
        Row("1 submit", "ceiling: FastAPI + one XADD", "req/s", [r["rps"] for r in c]),
        Row("1 submit", "ceiling p50 latency", "ms", [r["p50_ms"] for r in c],
            note=f"p99 {median([r['p99_ms'] for r in c]):.1f} ms"),
        Row("1 submit", "gateway / ceiling", "ratio", ratios, goal=goal,
            holds=bool(ratios) and median(ratios) >= GOAL_RATIO),
        *([Row("1 submit", "stricter ceiling: bare ASGI + one XADD", "req/s", [r["rps"] for r in bare],
               note=f"p50 {median([r['p50_ms'] for r in bare]):.1f} ms"),
           Row("1 submit", "gateway / stricter ceiling", "ratio", bare_ratios,
               note="information: no goal")] if bare else []),
    ]  # fmt: skip


def main(argv: list[str]) -> None:
    if argv and argv[0] == "ceiling":
        serve_ceiling(int(argv[1]), argv[2], *argv[3:4])
    elif argv and argv[0] == "load":
        load_main(argv[1], float(argv[2]), int(argv[3]), float(argv[4]))
    else:
        from bench.report import text_table

        with (
            tempfile.TemporaryDirectory(prefix="tt-bench-") as tmp,
            RedisServer(Path(tmp) / "redis") as redis,
        ):
            print(text_table(measure(redis.url, Path(tmp))))


if __name__ == "__main__":
    main(sys.argv[1:])
