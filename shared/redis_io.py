"""Redis connections: short timeouts for commands, none for blocking readers."""

from __future__ import annotations

from typing import Any

import redis as sync_redis
import redis.sentinel as sync_sentinel
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.config import RedisTarget
from shared.wire import fast_packing

COMMAND_TIMEOUT_S = 5.0


def connect(
    url: str | RedisTarget,
    *,
    blocking: bool = False,
    max_connections: int | None = None,
    client_name: str | None = None,
    pool_wait_s: float | None = None,
) -> Redis:
    """A client for ``url`` (or a target's Sentinels); ``blocking=True`` for XREAD/XREADGROUP with BLOCK.

    ``pool_wait_s``: with ``max_connections``, a caller waits this long for a free connection
    instead of failing at once.

    ``client_name`` is set on every connection (CLIENT SETNAME), so ``CLIENT LIST`` shows whose it is.

    A blocking read on a connection whose socket timeout is shorter than BLOCK raises a timeout,
    so blocking readers get their own client with no socket timeout. Commands are packed by
    hiredis (``shared.wire``).
    """
    options: dict[str, Any] = dict(
        socket_timeout=None if blocking else COMMAND_TIMEOUT_S,
        socket_connect_timeout=COMMAND_TIMEOUT_S,
        health_check_interval=0 if blocking else 30,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=3),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        max_connections=max_connections,
        client_name=client_name,
    )
    if isinstance(url, RedisTarget) and url.sentinel is not None:
        return fast_packing(_master_for(url, options, pool_wait_s))
    url = url.url if isinstance(url, RedisTarget) else url
    if pool_wait_s is None:
        return fast_packing(Redis.from_url(url, **options))
    pool = BlockingConnectionPool.from_url(url, timeout=pool_wait_s, **options)
    return fast_packing(Redis(connection_pool=pool))


class _BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
    """A Sentinel pool whose callers wait for a free connection (as ``BlockingConnectionPool``)."""


class _SentinelRedis(Redis):
    """A master client that also closes the Sentinel clients it discovers the master through."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        pool = self.connection_pool
        await super().aclose(close_connection_pool)
        if isinstance(pool, SentinelConnectionPool):
            await pool.sentinel_manager.aclose()


def _master_for(target: RedisTarget, options: dict[str, Any], pool_wait_s: float | None) -> Redis:
    """A client of the master the Sentinels name now. Its pool asks them again whenever a
    connection is made, and drops connections to a demoted master (``READONLY`` replies), so a
    command after a failover, retried by ``retry``, reaches the new master."""
    spec = target.sentinel
    assert spec is not None
    sentinel_options = {
        "socket_timeout": COMMAND_TIMEOUT_S,
        "socket_connect_timeout": COMMAND_TIMEOUT_S,
        "password": spec.password,
    }
    sentinel = Sentinel(list(spec.sentinels), sentinel_kwargs=sentinel_options)  # type: ignore[no-untyped-call]
    url_options = {k: v for k, v in parse_url(target.url).items() if k not in ("host", "port", "path")}
    if pool_wait_s is not None:
        options["timeout"] = pool_wait_s
    if options["max_connections"] is None:
        options.pop("max_connections")
    pool_class = SentinelConnectionPool if pool_wait_s is None else _BlockingSentinelPool
    client: Redis = sentinel.master_for(
        spec.master, redis_class=_SentinelRedis, connection_pool_class=pool_class, **url_options, **options
    )
    return client


async def ensure_group(redis: Redis, stream: str, group: str) -> None:
    """Create a consumer group (and its stream) from the start, if it does not exist yet."""
    try:
        await redis.xgroup_create(stream, group, id="0", mkstream=True)
    except Exception as exc:  # redis raises ResponseError BUSYGROUP when it exists
        if "BUSYGROUP" not in str(exc):
            raise


def connect_blocking_sync(target: RedisTarget) -> sync_redis.Redis:
    """A synchronous client for blocking reads (the CLI's ``watch --redis``), through the
    Sentinels when they are set."""
    if target.sentinel is None:
        return sync_redis.Redis.from_url(
            target.url, socket_timeout=None, socket_connect_timeout=COMMAND_TIMEOUT_S
        )
    spec = target.sentinel
    sentinel = sync_sentinel.Sentinel(  # type: ignore[no-untyped-call]
        list(spec.sentinels),
        sentinel_kwargs={"socket_timeout": COMMAND_TIMEOUT_S, "password": spec.password},
    )
    url_options = {k: v for k, v in parse_url(target.url).items() if k not in ("host", "port", "path")}
    client: sync_redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call]
        spec.master, socket_timeout=None, socket_connect_timeout=COMMAND_TIMEOUT_S, **url_options
    )
    return client
