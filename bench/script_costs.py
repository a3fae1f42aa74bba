"""What each Lua script costs Redis: server-side µs per call and Redis CPU per call, one at a time.

    .venv/bin/python -m bench.script_costs [N]      # default 5000 calls per script

Starts its own redis-server (no persistence). For each script: CONFIG RESETSTAT, N calls from
one client in a pipeline of 50 (so the client's round trips do not idle the server), then
``INFO commandstats`` (time inside the command) and ``INFO cpu`` (the server's whole CPU,
network included). The figures feed docs/capacity.md.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

from redis.asyncio import Redis

from shared.events import RunRequested, RunStarted, StepProgress
from shared.ids import new_run_id
from shared.keys import Keys
from shared.redis_io import connect
from shared.redis_server import RedisServer
from shared.store import EventStore

WINDOW = 50


async def server_cost(redis: Redis, n: int, call: Callable[[int], Awaitable[object]]) -> dict[str, float]:
    """µs per call inside EVALSHA/EVAL, and the server's CPU µs per call, over ``n`` calls."""
    await redis.config_resetstat()
    cpu = await redis.info("cpu")
    for start in range(0, n, WINDOW):
        await asyncio.gather(*(call(i) for i in range(start, min(start + WINDOW, n))))
    stats, after = await redis.info("commandstats"), await redis.info("cpu")
    inside = sum(v["usec"] for k, v in stats.items() if k.startswith("cmdstat_eval"))
    used = sum(after[f] - cpu[f] for f in ("used_cpu_sys", "used_cpu_user"))
    return {"script_us": inside / n, "server_cpu_us": used * 1e6 / n}


async def measure(redis_url: str, n: int) -> dict[str, dict[str, float]]:
    redis = connect(redis_url)
    store = EventStore(redis, Keys("tt:"))
    runs = [new_run_id() for _ in range(n)]
    try:
        await redis.flushdb()
        out = {"submit": await server_cost(redis, n, lambda i: store.submit(_request(runs[i])))}

        async def start(i: int) -> object:
            return await store.append(
                RunStarted(run_id=runs[i], runner_id="r", attempt=1, steps=("s",)), fence="r"
            )

        out["append (start)"] = await server_cost(redis, n, start)

        async def progress(i: int) -> object:
            return await store.append(StepProgress(run_id=runs[i], step="s", progress=0.5), fence="r")

        out["append (progress)"] = await server_cost(redis, n, progress)
        return out
    finally:
        await redis.aclose()


def _request(run_id: str) -> RunRequested:
    return RunRequested(
        run_id=run_id, user_id=f"u{run_id[-2:]}", symbol="ACME", model_id="offline", analysts=()
    )


def main(argv: list[str]) -> None:
    n = int(argv[0]) if argv else 5000
    with tempfile.TemporaryDirectory() as tmp, RedisServer(Path(tmp) / "redis") as redis:
        print(json.dumps(asyncio.run(measure(redis.url, n)), indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
