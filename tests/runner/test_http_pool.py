"""The runner's model client: httpx on the runner's own HTTP/1.1 transport.

A connection per run in flight, kept alive for the run's next call, never more than the limit;
httpx's errors for what breaks (refused, timed out, cut mid-answer); a streamed answer read to
its end leaves its connection for the next call.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest

from services.runner.http_pool import ModelTransport, model_client
from services.runner.pipeline.llm import ChatRequest, Message, OpenAIChat, RetryPolicy
from shared.models import ModelSpec


class HeldServer:
    """An HTTP/1.1 server that answers nothing until ``release``; counts its connections."""

    def __init__(self) -> None:
        self.connections = 0
        self.waiting = 0
        self.release = asyncio.Event()
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length")
                    ),
                    0,
                )
                await reader.readexactly(length)
                self.waiting += 1
                await self.release.wait()
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@asynccontextmanager
async def held_server() -> AsyncIterator[HeldServer]:
    state = HeldServer()
    server = await asyncio.start_server(state.handle, "127.0.0.1", 0, backlog=1024)
    state.port = server.sockets[0].getsockname()[1]
    try:
        yield state
    finally:
        server.close()


async def test_every_run_in_flight_has_a_connection_at_once_and_reuses_it() -> None:
    n = 100
    transport = ModelTransport(n)
    async with held_server() as server, httpx.AsyncClient(transport=transport) as http:
        url = f"http://127.0.0.1:{server.port}/v1"
        for _ in range(2):
            server.release.clear()
            server.waiting = 0
            calls = [asyncio.create_task(http.post(url, json={"n": i})) for i in range(n)]
            async with asyncio.timeout(10):
                while server.waiting < n:  # no call queues behind another in the client
                    await asyncio.sleep(0.01)
            assert transport.in_use == n
            server.release.set()
            assert all(r.status_code == 200 for r in await asyncio.gather(*calls))
            assert transport.in_use == 0
        assert server.connections == n == transport.opened  # the second round reused the first's


async def test_calls_beyond_the_limit_wait_for_a_connection() -> None:
    transport = ModelTransport(4)
    async with held_server() as server, httpx.AsyncClient(transport=transport) as http:
        url = f"http://127.0.0.1:{server.port}/v1"
        calls = [asyncio.create_task(http.post(url, json={"n": i})) for i in range(10)]
        async with asyncio.timeout(10):
            while server.waiting < 4:
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        assert server.waiting == 4 and transport.in_use == 4
        server.release.set()
        assert all(r.status_code == 200 for r in await asyncio.gather(*calls))
        assert server.connections == 4 and transport.in_use == 0


async def test_idle_connections_to_another_origin_make_room_within_the_limit() -> None:
    """The limit counts sockets (the open-files check relies on it), not connections per origin."""
    transport = ModelTransport(1)
    http = httpx.AsyncClient(transport=transport)
    async with held_server() as first, held_server() as second, http:
        first.release.set()
        second.release.set()
        for server in (first, second, first):
            assert (await http.post(f"http://127.0.0.1:{server.port}/v1", json={})).status_code == 200
        assert len(transport.idle()) == 1 and (first.connections, second.connections) == (2, 1)


async def test_a_cancelled_call_gives_its_connection_back() -> None:
    transport = ModelTransport(1)
    async with held_server() as server, httpx.AsyncClient(transport=transport) as http:
        url = f"http://127.0.0.1:{server.port}/v1"
        first = asyncio.create_task(http.post(url, json={}))
        queued = asyncio.create_task(http.post(url, json={}))
        async with asyncio.timeout(10):
            while server.waiting < 1:
                await asyncio.sleep(0.01)
        queued.cancel()
        first.cancel()
        await asyncio.gather(first, queued, return_exceptions=True)
        assert transport.in_use == 0
        server.release.set()
        assert (await http.post(url, json={})).status_code == 200


async def test_a_failed_call_gives_its_connection_back() -> None:
    async with held_server() as server:
        port = server.port
    transport = ModelTransport(4)
    async with httpx.AsyncClient(transport=transport) as http:
        for _ in range(6):
            with pytest.raises(httpx.ConnectError):
                await http.post(f"http://127.0.0.1:{port}/v1", json={})
        assert transport.in_use == 0


async def test_an_answer_that_never_comes_times_out_as_httpx_says() -> None:
    async with held_server() as server, httpx.AsyncClient(transport=ModelTransport(2)) as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.post(f"http://127.0.0.1:{server.port}/v1", json={}, timeout=0.2)
        server.release.set()


async def test_an_answer_cut_off_is_a_transport_error_and_its_connection_is_not_reused() -> None:
    connections = 0

    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(cut, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"
    transport = ModelTransport(1)
    try:
        async with httpx.AsyncClient(transport=transport) as http:
            for _ in range(2):
                with pytest.raises(httpx.RemoteProtocolError):
                    await http.post(url, json={})
    finally:
        server.close()
    assert connections == 2 and transport.in_use == 0


CHUNKED_SSE_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"


async def test_the_read_timeout_counts_from_the_last_chunk_not_the_request() -> None:
    """A stream slower in total than the read timeout, but never silent that long, is read whole;
    a stall as long as the timeout is a ReadTimeout."""

    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(CHUNKED_SSE_HEAD)
        for _ in range(6):
            await asyncio.sleep(0.1)
            writer.write(b"2\r\nok\r\n")
        await asyncio.sleep(1.0)
        writer.close()

    server = await asyncio.start_server(trickle, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"
    received = b""
    try:
        async with httpx.AsyncClient(transport=ModelTransport(1)) as http:
            async with http.stream("POST", url, json={}, timeout=0.3) as response:
                with pytest.raises(httpx.ReadTimeout):
                    async for chunk in response.aiter_raw():
                        received += chunk
    finally:
        server.close()
    assert received == b"ok" * 6


async def sse_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, counter: list[int]) -> None:
    """Chat-completions streams, chunked as uvicorn sends them, as long as the client keeps asking."""
    counter.append(1)
    frames = [
        b'data: {"choices": [{"delta": {"content": "Hello"}}]}\n\n',
        b'data: {"choices": [{"delta": {"content": " there"}}]}\n\n',
        b'data: {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}}\n\n',
        b"data: [DONE]\n\n",
    ]
    try:
        while head := await reader.readuntil(b"\r\n\r\n"):
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            writer.write(CHUNKED_SSE_HEAD)
            for frame in frames:
                writer.write(b"%x\r\n%s\r\n" % (len(frame), frame))
                await writer.drain()
            await asyncio.sleep(0.05)  # the body's end comes after [DONE], as over a network
            writer.write(b"0\r\n\r\n")
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def test_a_streamed_answer_is_read_to_its_end_and_its_connection_reused() -> None:
    """The stream ends at ``[DONE]`` for the reader, but the body goes on (the chunked end):
    stopping there made every streamed call open a new connection."""
    counter: list[int] = []
    server = await asyncio.start_server(lambda r, w: sse_answer(r, w, counter), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    spec = ModelSpec(id="m", provider="openai", base_url=f"http://127.0.0.1:{port}/v1", model="m")
    seen: list[str] = []

    async def sink(text: str) -> None:
        seen.append(text)

    try:
        async with model_client(4, environ={}) as http:
            chat = OpenAIChat(spec, http, timeout_s=5, policy=RetryPolicy(retries=0))
            for _ in range(3):
                answer = await chat.stream(ChatRequest(task="t", messages=[Message("user", "hi")]), sink)
                assert (answer.text, answer.completion_tokens) == ("Hello there", 2)
    finally:
        server.close()
    assert len(counter) == 1 and seen[-1] == "Hello there"


async def test_a_proxy_in_the_environment_carries_the_model_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    """Behind a proxy the models are reached through it (the pools' explicit transport would go
    around it, and a model behind a corporate proxy would be unreachable)."""
    seen: list[bytes] = []

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append((await reader.readuntil(b"\r\n\r\n")).split(b"\r\n", 1)[0])
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(proxy, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    for name in ("NO_PROXY", "no_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{port}")
    try:
        async with model_client(4) as http:
            response = await http.post("http://127.0.0.2:9/v1/chat/completions", json={})
    finally:
        server.close()
        await server.wait_closed()
    assert response.status_code == 200
    assert seen == [b"POST http://127.0.0.2:9/v1/chat/completions HTTP/1.1"]
