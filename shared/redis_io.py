"""Redis connections: short timeouts for commands, none for blocking readers."""

from __future__ import annotations

from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.wire import fast_packing

COMMAND_TIMEOUT_S = 5.0


def connect(
    url: str,
    *,
    blocking: bool = False,
    max_connections: int | None = None,
    client_name: str | None = None,
    wait_s: float | None = None,
) -> Redis:
    """A client for ``url``; ``blocking=True`` for XREAD/XREADGROUP with BLOCK.

    ``client_name`` is set on every connection (CLIENT SETNAME), so ``CLIENT LIST`` shows whose it is.

    A blocking read on a connection whose socket timeout is shorter than BLOCK raises a timeout,
    so blocking readers get their own client with no socket timeout. Commands are packed by
    hiredis (``shared.wire``).

    ``wait_s``: with ``max_connections``, a caller finding every connection in use waits up to
    this long for one (``BlockingConnectionPool``) instead of failing at once: a process with
    more concurrent work than connections queues for them.
    """
    options: dict[str, Any] = {
        "socket_timeout": None if blocking else COMMAND_TIMEOUT_S,
        "socket_connect_timeout": COMMAND_TIMEOUT_S,
        "health_check_interval": 0 if blocking else 30,
        "retry": Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=3),
        "retry_on_error": [RedisConnectionError, RedisTimeoutError],
        "max_connections": max_connections,
        "client_name": client_name,
    }
    if wait_s is not None and max_connections is not None:
        client = Redis.from_pool(BlockingConnectionPool.from_url(url, timeout=wait_s, **options))
    else:
        client = Redis.from_url(url, **options)
    return fast_packing(client)


async def ensure_group(redis: Redis, stream: str, group: str) -> None:
    """Create a consumer group (and its stream) from the start, if it does not exist yet."""
    try:
        await redis.xgroup_create(stream, group, id="0", mkstream=True)
    except Exception as exc:  # redis raises ResponseError BUSYGROUP when it exists
        if "BUSYGROUP" not in str(exc):
            raise
