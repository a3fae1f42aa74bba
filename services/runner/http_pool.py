"""The runner's HTTP client to the models: httpx's client on a transport of plain HTTP/1.1 over
asyncio protocols, its responses parsed by httptools (the C parser uvicorn serves with).

At a thousand runs in flight the model calls are most of what the runner does, and httpx's
default transport (httpcore over anyio streams and the pure-Python h11, with a pool that scans
its connections per request: encode/httpcore#1035) costs several times this one per call
(docs/benchmarks.md). This transport makes the same exchange: one request at a time on a
connection, kept alive per origin for the next call, at most ``connections`` open at once (one
per run in flight: a call never queues behind another run's). It speaks what chat-completions
endpoints need (a request body of known length; a response with a length, chunked, or ended by
the close; TLS) through httpx's public transport interface, so every pipeline still calls an
``httpx.AsyncClient`` and gets httpx's responses, errors and timeouts.

With a proxy in the environment (``HTTPS_PROXY``, ``HTTP_PROXY``, ``ALL_PROXY``) the client is
httpx's own, which routes through it and honours ``NO_PROXY``: reaching the models at all comes
before the cost per call at a thousand runs in flight.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections import deque
from collections.abc import AsyncIterator, Mapping
from typing import cast

import httptools
import httpx

TIMEOUT = httpx.Timeout(60.0, connect=10.0)
PROXY_VARIABLES = ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY")
HIGH_WATER = 256 * 1024
"""Bytes of a response body buffered before the connection stops reading (a slow consumer)."""
Origin = tuple[bytes, str, int]


def model_client(connections: int, environ: Mapping[str, str] = os.environ) -> httpx.AsyncClient:
    """The client the pipelines call their models with: at most ``connections`` at once, or,
    behind a proxy, httpx's client with its proxy routing (an explicit transport turns it off)."""
    if any(environ.get(name) or environ.get(name.lower()) for name in PROXY_VARIABLES):
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        return httpx.AsyncClient(timeout=TIMEOUT, limits=limits)
    return httpx.AsyncClient(timeout=TIMEOUT, transport=ModelTransport(connections))


class ModelTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 connections kept alive per origin, at most ``connections`` in use at once."""

    def __init__(self, connections: int) -> None:
        self.limit = max(connections, 1)
        self.in_use = 0
        self.opened = 0
        """Connections opened so far (a reused one is not counted again)."""
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._idle: dict[Origin, list[_Connection]] = {}
        self._tls: ssl.SSLContext | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
        await self._acquire(timeouts.get("pool"))
        connection: _Connection | None = None
        try:
            connection = await self._connection(request.url, timeouts.get("connect"))
            body = await request.aread()
            connection.send(_head(request, len(body)), body)
            status = await connection.response_head(timeouts.get("read"))
        except BaseException:
            if connection is not None:
                connection.close()
            self._release()
            raise
        stream = _Body(self, connection, _origin(request.url), timeouts.get("read"))
        return httpx.Response(
            status, headers=connection.headers, stream=stream, extensions={"http_version": b"HTTP/1.1"}
        )

    async def aclose(self) -> None:
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
        self._idle.clear()

    async def _acquire(self, timeout: float | None) -> None:
        if self.in_use < self.limit and not self._waiters:
            self.in_use += 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(timeout):
                await waiter
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled():
                self._release()  # handed a slot as it gave up: pass it on
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
            if isinstance(exc, TimeoutError):
                raise httpx.PoolTimeout("no model connection free in time") from exc
            raise

    def _release(self) -> None:
        """A slot goes to the first waiter, else back to the count (in_use stays if handed on)."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.in_use -= 1

    def recycle(self, origin: Origin, connection: _Connection) -> None:
        if connection.reusable:
            connection.reset()
            self._idle.setdefault(origin, []).append(connection)
        else:
            connection.close()
        self._release()

    async def _connection(self, url: httpx.URL, timeout: float | None) -> _Connection:
        origin = _origin(url)
        idle = self._idle.get(origin)
        while idle:
            connection = idle.pop()  # the one used last: the least likely to have timed out
            if not connection.closed:
                return connection
        return await self._connect(origin, timeout)

    async def _connect(self, origin: Origin, timeout: float | None) -> _Connection:
        self._make_room()
        scheme, host, port = origin
        tls = self._context() if scheme == b"https" else None
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                _, connection = await loop.create_connection(
                    _Connection, host, port, ssl=tls, server_hostname=host if tls else None
                )
        except TimeoutError as exc:
            raise httpx.ConnectTimeout(f"connecting to {host}:{port} timed out") from exc
        except OSError as exc:
            raise httpx.ConnectError(f"connecting to {host}:{port}: {exc}") from exc
        self.opened += 1
        return connection

    def idle(self) -> list[_Connection]:
        """Open connections waiting for a call, every origin."""
        return [c for connections in self._idle.values() for c in connections if not c.closed]

    def _make_room(self) -> None:
        """Close an idle connection to another origin when the open ones are at the limit: the
        limit is the sockets the runner's open-files check counts on, whatever the origins."""
        idle = self.idle()
        if len(idle) + self.in_use > self.limit:
            idle[0].close()

    def _context(self) -> ssl.SSLContext:
        if self._tls is None:  # loading the CA bundle takes ~70 ms: once, and only for https
            self._tls = httpx.create_ssl_context()
        return self._tls


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection; one exchange at a time, its response fed to httptools."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self._timer: asyncio.TimerHandle | None = None
        self.reset()

    def reset(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.head_done = False
        self.complete = False
        self.keep_alive = False
        self.error: httpx.TransportError | None = None
        self.timed_out = False
        self._wake: asyncio.Future[None] | None = None
        self._deadline = 0.0
        self._stop_timer()

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    @property
    def reusable(self) -> bool:
        return self.complete and not self.closed and self.keep_alive

    def send(self, head: bytes, body: bytes) -> None:
        assert self.transport is not None
        self.transport.write(head + body)

    async def response_head(self, timeout: float | None) -> int:
        while not self.head_done:
            await self.wait(timeout)
        return int(self.parser.get_status_code())

    async def wait(self, timeout: float | None) -> None:
        """Until the parser has more for us; raises what broke the exchange.

        The read timeout is one timer per exchange that moves its deadline on, not a timer per
        wait: a streamed answer waits once per chunk."""
        if self.error is not None:
            raise self.error
        loop = asyncio.get_running_loop()
        self._wake = loop.create_future()
        if timeout is not None:
            self._deadline = loop.time() + timeout
            if self._timer is None:
                self._timer = loop.call_at(self._deadline, self._expire)
        await self._wake
        if self.timed_out:
            raise httpx.ReadTimeout(f"no answer within {timeout} s")
        if self.error is not None and not self.chunks and not self.complete:
            raise self.error

    def _expire(self) -> None:
        self._timer = None
        if self._wake is None or self._wake.done():
            return  # not waiting: the next wait arms the timer again
        loop = asyncio.get_running_loop()
        if loop.time() < self._deadline:
            self._timer = loop.call_at(self._deadline, self._expire)
        else:
            self.timed_out = True
            self._wake.set_result(None)

    def take(self) -> bytes:
        chunk = self.chunks.popleft()
        self.buffered -= len(chunk)
        if self.transport is not None and self.buffered < HIGH_WATER // 2:
            self.transport.resume_reading()
        return chunk

    def close(self) -> None:
        self.closed = True
        self._stop_timer()
        if self.transport is not None:
            self.transport.close()

    def _notify(self) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is one, not a subclass

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(httpx.RemoteProtocolError("the server upgraded the connection"))
        except httptools.HttpParserError as exc:
            self._fail(httpx.RemoteProtocolError(f"unreadable response: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.head_done and not self.complete and not _framed(self.headers):
            self.complete = True  # a body delimited by the connection's end
            self._notify()
        elif not self.complete:
            self._fail(httpx.RemoteProtocolError("the server closed the connection mid-answer"))

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.head_done = True
        self._notify()

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered >= HIGH_WATER and self.transport is not None:
            self.transport.pause_reading()
        self._notify()

    def on_message_complete(self) -> None:
        self.keep_alive = self.parser.should_keep_alive()  # only known until the parser resets
        self.complete = True
        self._notify()

    def _fail(self, error: httpx.TransportError) -> None:
        if self.error is None:
            self.error = error
        self.close()
        self._notify()


class _Body(httpx.AsyncByteStream):
    """A response body read as it arrives; closing it returns the connection (or drops it)."""

    def __init__(
        self, transport: ModelTransport, connection: _Connection, origin: Origin, timeout: float | None
    ) -> None:
        self.transport, self.connection, self.origin, self.timeout = transport, connection, origin, timeout
        self.done = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        connection = self.connection
        while True:
            if connection.chunks:
                yield connection.take()
            elif connection.complete:
                return
            else:
                await connection.wait(self.timeout)

    async def aclose(self) -> None:
        if not self.done:
            self.done = True
            self.transport.recycle(self.origin, self.connection)


def _origin(url: httpx.URL) -> Origin:
    scheme = url.raw_scheme
    return scheme, url.host, url.port or (443 if scheme == b"https" else 80)


def _head(request: httpx.Request, length: int) -> bytes:
    """The request line and headers; the body is sent whole, with its length."""
    lines = [b"%s %s HTTP/1.1" % (request.method.encode(), request.url.raw_path)]
    for name, value in request.headers.raw:
        if name.lower() not in (b"transfer-encoding", b"content-length"):
            lines.append(name + b": " + value)
    if length or request.method not in ("GET", "HEAD"):
        lines.append(b"Content-Length: %d" % length)
    return b"\r\n".join(lines) + b"\r\n\r\n"


def _framed(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether the body has a length or is chunked (otherwise it ends with the connection)."""
    names = {name.lower() for name, _ in headers}
    return b"content-length" in names or b"transfer-encoding" in names
