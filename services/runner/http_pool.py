"""The runner's HTTP client to the models: one connection per run in flight, in small pools.

httpcore's connection pool scans all its connections, and for each idle one all of them again,
whenever a request starts or a response is closed (encode/httpcore#1035): with a connection per
run in flight, each model call costs work that grows with the square of the runs in flight, and
a runner with 1,000 LLM-bound runs spent all its CPU there and completed none. So the client's
connections are split over pools of at most ``SHARD_CONNECTIONS``, each an ordinary
``httpx.AsyncHTTPTransport``, and a request goes to a pool with a free connection (the one used
last, so keep-alive connections are reused): the scan per call is bounded, whatever the runs in
flight. Requests beyond the free connections wait in a pool's own queue, round robin.

With a proxy in the environment (``HTTPS_PROXY``, ``HTTP_PROXY``, ``ALL_PROXY``) the client is
httpx's own, which routes through it and honours ``NO_PROXY``: reaching the models at all comes
before the cost per call at a thousand runs in flight.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Mapping

import httpx

SHARD_CONNECTIONS = 8
"""Connections per pool: an assignment in a pool scans at most this many, squared."""
TIMEOUT = httpx.Timeout(60.0, connect=10.0)
Body = httpx.SyncByteStream | httpx.AsyncByteStream
PROXY_VARIABLES = ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY")


def model_client(connections: int, environ: Mapping[str, str] = os.environ) -> httpx.AsyncClient:
    """The client the pipelines call their models with: ``connections`` in pools of a few, or,
    behind a proxy, httpx's client with its proxy routing (an explicit transport turns it off)."""
    if any(environ.get(name) or environ.get(name.lower()) for name in PROXY_VARIABLES):
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        return httpx.AsyncClient(timeout=TIMEOUT, limits=limits)
    return httpx.AsyncClient(timeout=TIMEOUT, transport=PooledTransport(connections))


class PooledTransport(httpx.AsyncBaseTransport):
    """``connections`` HTTP connections in pools of at most ``shard`` each."""

    def __init__(self, connections: int, shard: int = SHARD_CONNECTIONS) -> None:
        pools = -(-max(connections, 1) // shard)
        per = -(-max(connections, 1) // pools)
        self.per_pool = per
        limits = httpx.Limits(max_connections=per, max_keepalive_connections=per)
        tls = httpx.create_ssl_context()  # one for all pools: loading the CA bundle takes ~70 ms
        self.pools = [httpx.AsyncHTTPTransport(verify=tls, limits=limits) for _ in range(pools)]
        self._free = [i for i in range(pools) for _ in range(per)]
        """One pool index per connection not in use; the last one freed is taken first."""
        self._next = 0

    @property
    def in_use(self) -> int:
        """Connections lent to requests whose responses are not closed yet."""
        return self.per_pool * len(self.pools) - len(self._free)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        index, lent = self._take()
        release = self._releaser(index, lent)
        try:
            response = await self.pools[index].handle_async_request(request)
        except BaseException:
            release()
            raise
        response.stream = _Releasing(response.stream, release)
        return response

    async def aclose(self) -> None:
        for pool in self.pools:
            await pool.aclose()

    def _take(self) -> tuple[int, bool]:
        """A pool with a free connection; when none has one, the next pool in turn (it queues)."""
        if self._free:
            return self._free.pop(), True
        self._next = (self._next + 1) % len(self.pools)
        return self._next, False

    def _releaser(self, index: int, lent: bool) -> Callable[[], None]:
        done = False

        def release() -> None:
            nonlocal done
            if lent and not done:
                self._free.append(index)
            done = True

        return release


class _Releasing(httpx.AsyncByteStream):
    """A response body that gives its connection back to the transport when closed."""

    def __init__(self, stream: Body, release: Callable[[], None]) -> None:
        assert isinstance(stream, httpx.AsyncByteStream)  # what an async transport answers
        self.stream, self.release = stream, release

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self.stream:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self.stream.aclose()
        finally:
            self.release()
