"""Redis clients, built in one place: short timeouts for commands, none for blocking readers."""

from __future__ import annotations

from typing import Any

import redis
import redis.sentinel
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry as SyncRetry

from shared.config import RedisTarget

COMMAND_TIMEOUT_S = 5.0


def connect(
    url: str | RedisTarget,
    *,
    blocking: bool = False,
    max_connections: int | None = None,
    client_name: str | None = None,
    wait_s: float = COMMAND_TIMEOUT_S,
) -> Redis:
    """A client for ``url`` (or the master a target's Sentinels name); ``blocking=True`` for
    XREAD/XREADGROUP with BLOCK.

    ``client_name`` is set on every connection (CLIENT SETNAME), so ``CLIENT LIST`` shows whose it is.
    With ``max_connections`` the pool never grows past it: a caller finding every connection in
    use waits up to ``wait_s`` for one (``BlockingConnectionPool``) instead of failing at once, so
    a process with more concurrent work than connections queues for them.

    A blocking read on a connection whose socket timeout is shorter than BLOCK raises a timeout,
    so blocking readers get their own client with no socket timeout.
    """
    options = _options(blocking, client_name)
    if isinstance(url, RedisTarget) and url.sentinel is not None:
        return _master_for(url, options, max_connections, wait_s)
    url = url.url if isinstance(url, RedisTarget) else url
    if max_connections is None:
        return Redis.from_url(url, **options)
    pool = BlockingConnectionPool.from_url(url, max_connections=max_connections, timeout=wait_s, **options)
    return Redis.from_pool(pool)


def connect_sync(
    url: str | RedisTarget, *, blocking: bool = False, client_name: str | None = None
) -> redis.Redis:
    """The synchronous client (command-line tools) with the same options as ``connect``."""
    options = _options(blocking, client_name)
    options["retry"] = SyncRetry(ExponentialBackoff(cap=1.0, base=0.05), retries=3)
    if isinstance(url, RedisTarget) and url.sentinel is not None:
        spec = url.sentinel
        sentinel = redis.sentinel.Sentinel(  # type: ignore[no-untyped-call]
            list(spec.sentinels), sentinel_kwargs=_sentinel_options(url)
        )
        client: redis.Redis = sentinel.master_for(spec.master, **_url_options(url), **options)  # type: ignore[no-untyped-call]
        return client
    return redis.Redis.from_url(url.url if isinstance(url, RedisTarget) else url, **options)


def _options(blocking: bool, client_name: str | None) -> dict[str, Any]:
    # The version sent with CLIENT SETINFO, given once: without it redis-py looks it up in the
    # installed packages' metadata for every new connection (a scan of site-packages each time).
    return {
        "driver_info": redis.DriverInfo(lib_version=redis.__version__),
        "socket_timeout": None if blocking else COMMAND_TIMEOUT_S,
        "socket_connect_timeout": COMMAND_TIMEOUT_S,
        "health_check_interval": 0 if blocking else 30,
        "retry": Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=3),
        "retry_on_error": [RedisConnectionError, RedisTimeoutError],
        "client_name": client_name,
    }


class _BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
    """A Sentinel pool whose callers wait for a free connection (as ``BlockingConnectionPool``)."""


class _SentinelRedis(Redis):
    """A master client that also closes the Sentinel clients it discovers the master through."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        pool = self.connection_pool
        await super().aclose(close_connection_pool)
        if isinstance(pool, SentinelConnectionPool):
            await pool.sentinel_manager.aclose()


def _master_for(
    target: RedisTarget, options: dict[str, Any], max_connections: int | None, wait_s: float
) -> Redis:
    """A client of the master the Sentinels name now. Its pool asks them again whenever a
    connection is made, and drops connections to a demoted master (``READONLY`` replies), so a
    command after a failover, retried by ``retry``, reaches the new master."""
    spec = target.sentinel
    assert spec is not None
    sentinel = Sentinel(list(spec.sentinels), sentinel_kwargs=_sentinel_options(target))  # type: ignore[no-untyped-call]
    pool_class: type[SentinelConnectionPool] = SentinelConnectionPool
    if max_connections is not None:
        options = {**options, "max_connections": max_connections, "timeout": wait_s}
        pool_class = _BlockingSentinelPool
    client: Redis = sentinel.master_for(
        spec.master,
        redis_class=_SentinelRedis,
        connection_pool_class=pool_class,
        **_url_options(target),
        **options,
    )
    return client


def _sentinel_options(target: RedisTarget) -> dict[str, Any]:
    """How to talk to the Sentinels themselves: short timeouts, their own password."""
    assert target.sentinel is not None
    return {
        "socket_timeout": COMMAND_TIMEOUT_S,
        "socket_connect_timeout": COMMAND_TIMEOUT_S,
        "password": target.sentinel.password,
    }


def _url_options(target: RedisTarget) -> dict[str, Any]:
    """What the URL still says about the master's connections: database, credentials, TLS."""
    return {k: v for k, v in parse_url(target.url).items() if k not in ("host", "port", "path")}


async def ensure_group(redis: Redis, stream: str, group: str) -> None:
    """Create a consumer group (and its stream) from the start, if it does not exist yet."""
    try:
        await redis.xgroup_create(stream, group, id="0", mkstream=True)
    except Exception as exc:  # redis raises ResponseError BUSYGROUP when it exists
        if "BUSYGROUP" not in str(exc):
            raise
