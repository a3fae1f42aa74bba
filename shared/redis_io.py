"""Redis clients, built in one place: short timeouts for commands, none for blocking readers."""

from __future__ import annotations

from typing import Any

import redis
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry as SyncRetry

COMMAND_TIMEOUT_S = 5.0


def connect(
    url: str,
    *,
    blocking: bool = False,
    max_connections: int | None = None,
    client_name: str | None = None,
    wait_s: float = COMMAND_TIMEOUT_S,
) -> Redis:
    """A client for ``url``; ``blocking=True`` for XREAD/XREADGROUP with BLOCK.

    ``client_name`` is set on every connection (CLIENT SETNAME), so ``CLIENT LIST`` shows whose it is.
    With ``max_connections`` the pool never grows past it: a caller finding every connection in
    use waits up to ``wait_s`` for one (``BlockingConnectionPool``) instead of failing at once, so
    a process with more concurrent work than connections queues for them.

    A blocking read on a connection whose socket timeout is shorter than BLOCK raises a timeout,
    so blocking readers get their own client with no socket timeout.
    """
    options = _options(blocking, client_name)
    if max_connections is None:
        return Redis.from_url(url, **options)
    pool = BlockingConnectionPool.from_url(url, max_connections=max_connections, timeout=wait_s, **options)
    return Redis.from_pool(pool)


def connect_sync(url: str, *, blocking: bool = False, client_name: str | None = None) -> redis.Redis:
    """The synchronous client (command-line tools) with the same options as ``connect``."""
    options = _options(blocking, client_name)
    options["retry"] = SyncRetry(ExponentialBackoff(cap=1.0, base=0.05), retries=3)
    return redis.Redis.from_url(url, **options)


def _options(blocking: bool, client_name: str | None) -> dict[str, Any]:
    return {
        "socket_timeout": None if blocking else COMMAND_TIMEOUT_S,
        "socket_connect_timeout": COMMAND_TIMEOUT_S,
        "health_check_interval": 0 if blocking else 30,
        "retry": Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=3),
        "retry_on_error": [RedisConnectionError, RedisTimeoutError],
        "client_name": client_name,
    }


async def ensure_group(redis: Redis, stream: str, group: str) -> None:
    """Create a consumer group (and its stream) from the start, if it does not exist yet."""
    try:
        await redis.xgroup_create(stream, group, id="0", mkstream=True)
    except Exception as exc:  # redis raises ResponseError BUSYGROUP when it exists
        if "BUSYGROUP" not in str(exc):
            raise
