"""Clients from ``shared.redis_io``: values and pipelines round-trip, and a bounded pool waits."""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis

from shared.redis_io import connect


async def test_a_client_round_trips_values_and_pipelines(redis_url: str, redis: Redis) -> None:
    client = connect(redis_url, client_name="tt-test:wire")
    try:
        values: dict[str, bytes | str | int | float] = {
            "s": "é ü",
            "b": b"\x00\xff",
            "i": 604800,
            "f": 1.5,
            "big": b"x" * 20_000,
        }
        mapping: Any = values
        await client.hset("tt:wire", mapping=mapping)
        async with client.pipeline(transaction=False) as pipe:
            pipe.hgetall("tt:wire")
            pipe.xadd("tt:wire:s", {"e": memoryview(b"view")})
            got, _ = await pipe.execute()
        assert got == {k.encode(): v if isinstance(v, bytes) else str(v).encode() for k, v in values.items()}
        entries: Any = await redis.xrange("tt:wire:s")
        assert entries[0][1] == {b"e": b"view"}
        assert await client.client_getname() == "tt-test:wire"
    finally:
        await client.aclose()


async def test_a_bounded_client_never_opens_more_connections_than_its_bound(
    redis_url: str, redis: Redis
) -> None:
    client = connect(redis_url, max_connections=2, client_name="tt-test:bounded")
    try:
        assert isinstance(client.connection_pool, BlockingConnectionPool)
        replies = await asyncio.gather(*(client.blpop(["tt:wire:none"], timeout=0.05) for _ in range(6)))
        assert len(replies) == 6  # the others waited for a connection instead of failing
        named = [c for c in await redis.client_list() if c.get("name") == "tt-test:bounded"]
        assert len(named) == 2
    finally:
        await client.aclose()


def test_clients_send_the_library_version_they_were_given() -> None:
    """redis-py otherwise reads its version from the installed packages' metadata for every new
    connection; ``connect`` gives it once."""
    import redis

    client = connect("redis://127.0.0.1:1/0", max_connections=2)
    info = client.connection_pool.connection_kwargs["driver_info"]
    assert info.lib_version == redis.__version__
