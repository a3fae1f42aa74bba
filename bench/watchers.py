"""A load-generator process of SSE watchers: each follows one run's event stream to its end.

``python -m bench.watchers PORT PATHS_FILE`` opens one connection per line of PATHS_FILE (a run's
events path; a path may repeat), prints ``opened`` once every watcher has had its replay, and
at the end (every watcher saw its run end, or SIGTERM) one JSON line: the append→client
latency of every live frame (ms), the watchers that saw the end, and this process's CPU seconds.
Latency is the arrival stamp (``time.time()``) minus the frame's stream ID, which is Redis's
clock at the append on the same machine (1 ms grain); frames older than a watcher's first bytes
are its replay, not live, and are left out.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import json
import signal
import sys
import time
from pathlib import Path

from bench.common import raise_open_files
from bench.sse_fanout import SseClient, _Protocol, arrivals
from shared import streamids

TIMEOUT_S = 900.0


def live_latencies(chunks: list[tuple[float, bytes]]) -> list[float]:
    """ms from append to arrival for the frames appended after the watcher's first bytes."""
    if not chunks:
        return []
    opened_ms = chunks[0][0] * 1000
    out = []
    for stream_id, stamp in arrivals(chunks):
        appended = streamids.millis(stream_id)
        if appended > opened_ms:
            out.append(round(stamp * 1000 - appended, 2))
    return out


async def watch(port: int, paths: list[str]) -> None:
    loop = asyncio.get_running_loop()
    signals = {"opened": asyncio.Event(), "ended": asyncio.Event()}
    tally = {"n": len(paths), "opened": 0, "ended": 0}
    clients = [SseClient(path, signals, tally) for path in paths]
    transports = []
    for client in clients:
        transport, _ = await loop.create_connection(functools.partial(_Protocol, client), "127.0.0.1", port)
        transports.append(transport)
    await signals["opened"].wait()
    loop.add_signal_handler(signal.SIGTERM, signals["ended"].set)  # the bench is done waiting
    print("opened", flush=True)
    try:
        async with asyncio.timeout(TIMEOUT_S):
            await signals["ended"].wait()
    except TimeoutError:
        pass
    # The whole process's CPU, connecting included: with 2,500 watchers a process the last replay
    # can arrive near the runs' end, so counting from "opened" would miss most of the work.
    cpu = time.process_time()
    for transport in transports:
        transport.close()
    latencies = [x for c in clients for x in live_latencies(c.chunks)]
    print(json.dumps({"latencies_ms": latencies, "ended": tally["ended"], "cpu_s": cpu}), flush=True)


def main(argv: list[str]) -> None:
    """As ``bench.sse_fanout.clients_main``: the collector is off in a measuring instrument."""
    import uvloop

    gc.disable()
    paths = Path(argv[1]).read_text().split()
    if raise_open_files() < len(paths) + 64:
        raise SystemExit(f"{len(paths)} watchers need more open files than ulimit -Hn allows")
    uvloop.run(watch(int(argv[0]), paths))


if __name__ == "__main__":
    main(sys.argv[1:])
