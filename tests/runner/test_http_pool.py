"""The runner's model client: a connection per run in flight, in pools too small to be slow.

httpcore's pool does work per request that grows with its connections, squared when idle
(services/runner/http_pool.py): a client with one pool of 1,000 connections made the runner spend
all its CPU there. These tests hold the client to small pools that, together, still serve every
run in flight at once and reuse their connections.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest

from services.runner.http_pool import SHARD_CONNECTIONS, PooledTransport, model_client


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


@pytest.mark.parametrize("connections", [1, 7, 8, 100, 1000, 5000])
def test_connections_are_split_in_pools_of_a_few(connections: int) -> None:
    transport = PooledTransport(connections)
    assert transport.per_pool <= min(SHARD_CONNECTIONS, 16)  # a scan of 16² is ~0.1 ms
    assert connections <= transport.per_pool * len(transport.pools) < connections + len(transport.pools)


async def test_every_run_in_flight_has_a_connection_at_once_and_reuses_it() -> None:
    n = 100
    transport = PooledTransport(n)
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
        assert server.connections == n  # the second round reused the first one's connections


async def test_a_failed_call_gives_its_connection_back() -> None:
    async with held_server() as server:
        port = server.port
    transport = PooledTransport(4)
    async with httpx.AsyncClient(transport=transport) as http:
        for _ in range(6):
            with pytest.raises(httpx.ConnectError):
                await http.post(f"http://127.0.0.1:{port}/v1", json={})
        assert transport.in_use == 0


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
