"""Where row 2's time goes: one cold repetition split at the runner's first and last event.

    .venv/bin/python -m bench.e2e_timeline [N] [REPS]

Each repetition is ``bench.noop_e2e``'s cold one (runs queued, then one runner spawned, clock
stopped when the read model shows all N ended), with the clock read at the spawn and compared with
the global log's stream IDs (Redis's clock, the same host): spawn → the runner's "consuming" log
line (start-up: imports, clients, groups), spawn → the first runner event, first → last event
(processing), last event → all in the read model (the projector's tail and the 20 ms poll).
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from bench import noop_e2e
from shared import streamids
from shared.keys import Keys
from shared.redis_io import connect
from shared.redis_server import RedisServer
from shared.store import EventStore
from tests.support.processes import ServiceProcess


async def one(redis_url: str, workdir: Path, tag: str, n: int) -> dict[str, float]:
    keys = Keys(f"tl{tag}:")
    env = noop_e2e.base_env(redis_url, keys.prefix, workdir / f"tl-{tag}")
    redis = connect(redis_url)
    projector = ServiceProcess("projector", env, log_dir=workdir / "logs").start(timeout_s=30.0)
    runners: list[ServiceProcess] = []
    try:
        await noop_e2e.submit_all(EventStore(redis, keys), n, 0)
        after = await noop_e2e.last_log_id(redis, keys)
        spawned = time.time()
        runners = noop_e2e.start_runners(env, 1, 0, workdir / "logs")
        await noop_e2e.wait_completed(projector.url, n)
        visible = time.time()
        first = _seconds((await redis.xrange(keys.events, min=f"({after}", count=1))[0][0])
        last = _seconds((await redis.xrevrange(keys.events, count=1))[0][0])
        return {
            "spawn_to_consuming_s": _consuming_at(runners[0]) - spawned,
            "spawn_to_first_s": first - spawned,
            "first_to_last_s": last - first,
            "last_to_visible_s": visible - last,
            "total_s": visible - spawned,
        }
    finally:
        for runner in runners:
            runner.stop()
        projector.stop()
        await noop_e2e.drop_keys(redis, keys)
        await redis.aclose()


def _seconds(stream_id: bytes | str) -> float:
    return streamids.millis(stream_id.decode() if isinstance(stream_id, bytes) else stream_id) / 1000


def _consuming_at(runner: ServiceProcess) -> float:
    """When the runner logged that it consumes (its JSON log line's timestamp), NaN if it did not."""
    for line in runner.logs().splitlines():
        if line.startswith("{") and "consuming" in line:
            return datetime.fromisoformat(json.loads(line)["ts"]).timestamp()
    return float("nan")


async def main(n: int, reps: int) -> None:
    with tempfile.TemporaryDirectory() as tmp, RedisServer(Path(tmp) / "redis") as server:
        for i in range(reps):
            found = await one(server.url, Path(tmp), str(i), n)
            print("  ".join(f"{k} {v:.3f}" for k, v in found.items()), f" N={n}", flush=True)


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:3]]
    asyncio.run(main(*(args + [1000, 3][len(args) :])))
