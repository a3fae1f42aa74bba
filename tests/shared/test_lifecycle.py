"""The one service lifecycle: start, serve until asked, stop with grace, close always."""

from __future__ import annotations

import asyncio
import itertools
import socket

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from shared.lifecycle import Service


class Recorder(Service):
    name = "recorder"

    def __init__(self, grace_s: float = 1.0) -> None:
        super().__init__(grace_s=grace_s)
        self.seen: list[str] = []
        self.ticks = 0

    async def start(self) -> None:
        self.seen.append("start")
        self.spawn(self.every(0.01, self._tick, first=True), "ticker")

    async def _tick(self) -> None:
        self.ticks += 1

    async def drain(self) -> None:
        self.seen.append("drain")

    async def close(self) -> None:
        self.seen.append("close")


async def test_run_starts_serves_and_stops_in_order() -> None:
    service = Recorder()
    running = asyncio.create_task(service.run())
    await asyncio.wait_for(service.ready.wait(), 1)
    await asyncio.sleep(0.05)
    service.request_stop()
    await asyncio.wait_for(running, 2)
    assert service.seen == ["start", "drain", "close"]
    assert service.ticks >= 2
    assert not service.tasks


async def test_work_in_flight_gets_the_grace_period_then_is_cancelled() -> None:
    service = Recorder(grace_s=0.2)
    finished: list[str] = []

    async def short() -> None:
        await asyncio.sleep(0.05)
        finished.append("short")

    async def long() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            finished.append("long cancelled")
            raise

    running = asyncio.create_task(service.run())
    await service.ready.wait()
    service.spawn(short(), "short")
    service.spawn(long(), "long")
    service.request_stop()
    await asyncio.wait_for(running, 2)
    assert finished == ["short", "long cancelled"]


async def test_a_fatal_task_stops_the_service_and_run_reraises() -> None:
    service = Recorder()

    async def broken() -> None:
        raise ValueError("boom")

    running = asyncio.create_task(service.run())
    await service.ready.wait()
    service.spawn(broken(), "broken", fatal=True)
    with pytest.raises(ValueError, match="boom"):
        await asyncio.wait_for(running, 2)
    assert service.seen[-1] == "close"


async def test_a_failing_start_still_closes() -> None:
    class Broken(Recorder):
        async def start(self) -> None:
            self.seen.append("start")
            raise OSError("no redis")

    service = Broken()
    with pytest.raises(OSError):
        await service.run()
    assert service.seen == ["start", "drain", "close"]


async def test_retrying_backs_off_until_success_and_gives_up_on_stop() -> None:
    service = Recorder()
    calls: list[float] = []

    async def flaky() -> None:
        calls.append(asyncio.get_running_loop().time())
        if len(calls) < 3:
            raise ConnectionError("not yet")

    assert await service.retrying("reach it", flaky, base_s=0.05, cap_s=1.0)
    gaps = [b - a for a, b in itertools.pairwise(calls)]
    assert gaps[0] >= 0.045 and gaps[1] >= 0.095  # 0.05 doubling: a zero backoff fails this

    service.request_stop()

    async def never() -> None:
        raise ConnectionError("down")

    assert not await service.retrying("reach it", never)


async def test_an_http_server_is_one_of_its_tasks() -> None:
    async def hello(_request: object) -> PlainTextResponse:
        return PlainTextResponse("hi")

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(
        Starlette(routes=[Route("/", hello)]), host="127.0.0.1", port=port, log_config=None
    )
    service = Recorder()

    async def start() -> None:
        service.serve_http(config)

    service.start = start  # type: ignore[method-assign]
    running = asyncio.create_task(service.run())
    await service.ready.wait()
    for _ in range(100):
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            break
        except OSError:
            await asyncio.sleep(0.02)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert (await reader.read()).endswith(b"hi")
    writer.close()
    service.request_stop()
    await asyncio.wait_for(running, 5)
    assert service.failure is None
