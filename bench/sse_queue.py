"""The per-client cost of handing an SSE frame to a client's task, without sockets.

One process, ``N`` clients of one run, each a task draining its queue into a stand-in ``send``
behind four wrappers (what Starlette's error and exception layers, its route and our request
metrics put around a response's ``send``). The fan-out offers each frame to every client and
waits until all have sent it. Two queues: the hub's ``Listener`` (a deque and one waiter) and
the ``asyncio.Queue`` it replaced; alternating, CPU microseconds per client-frame.

    .venv/bin/python -m bench.sse_queue [CLIENTS] [FRAMES] [ROUNDS]
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import uvloop

from bench.common import summarize
from services.gateway.frames import make_frame
from services.gateway.hub import Listener

Send = Callable[[dict[str, Any]], Awaitable[None]]
LAYERS = 4


def wrapped(send: Send) -> Send:
    async def layer(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            pass
        await send(message)

    return layer


def stand_in_send(sent: list[int]) -> Send:
    """What uvicorn's ``send`` does for a chunk but the write: frame it and count it."""

    async def send(message: dict[str, Any]) -> None:
        body = message.get("body", b"")
        b"".join([b"%x\r\n" % len(body), body, b"\r\n"])
        sent[0] += 1

    for _ in range(LAYERS):
        send = wrapped(send)
    return send


async def listener_client(listener: Listener, send: Send) -> None:
    final = False
    while not final:
        data, final = await listener.drain()
        await send({"type": "http.response.body", "body": data, "more_body": not final})


async def queue_client(queue: asyncio.Queue[bytes], send: Send, frames: int) -> None:
    for _ in range(frames):
        data = await queue.get()
        await send({"type": "http.response.body", "body": data, "more_body": True})


async def one_round(kind: str, clients: int, frames: int) -> float:
    sent = [0]
    data = b"x" * 300
    offers: list[Callable[[int], object]]
    if kind == "Listener":
        listeners = [Listener("run", "0-0", 256) for _ in range(clients)]
        tasks = [asyncio.ensure_future(listener_client(lis, stand_in_send(sent))) for lis in listeners]
        built = [make_frame(f"{k + 1}-0", "StepProgress", data, final=k == frames - 1) for k in range(frames)]
        offers = [lambda k, lis=lis: lis.offer(built[k]) for lis in listeners]
    else:
        queues: list[asyncio.Queue[bytes]] = [asyncio.Queue(256) for _ in range(clients)]
        tasks = [asyncio.ensure_future(queue_client(q, stand_in_send(sent), frames)) for q in queues]
        offers = [lambda k, q=q: q.put_nowait(data) for q in queues]
    await asyncio.sleep(0)
    began = time.process_time()
    for k in range(frames):
        for offer in offers:
            offer(k)
        while sent[0] < clients * (k + 1):
            await asyncio.sleep(0)
    spent = time.process_time() - began
    await asyncio.gather(*tasks)
    return spent * 1e6 / (clients * frames)


async def main(clients: int, frames: int, rounds: int) -> None:
    found: dict[str, list[float]] = {"Listener": [], "asyncio.Queue": []}
    for _ in range(rounds):
        for kind in found:
            found[kind].append(await one_round(kind, clients, frames))
    print(f"{clients} clients, {frames} frames, {LAYERS} send wrappers; CPU us per client-frame, "
          f"median [min-max] of {rounds}")  # fmt: skip
    for kind, values in found.items():
        lo, mid, hi = summarize(values)
        print(f"{kind:>14}: {mid:.2f} [{lo:.2f}-{hi:.2f}]")


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:]] + [1000, 50, 7][len(sys.argv) - 1 :]
    uvloop.run(main(*args[:3]))
