"""Commands packed by hiredis: the same bytes as redis-py's own packer, against a real Redis."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.connection import Connection
from redis.exceptions import DataError

from shared.redis_io import connect
from shared.wire import HiredisPacking, fast_packing

_ARGS: list[tuple[Any, ...]] = [
    ("SET", "k", "v"),
    ("EVALSHA", "a" * 40, 2, "k1", "k2", b"\x00\xffbytes", 604800, 1.5, -3, "é ü", ""),
    ("SET", 2**70, float("nan"), 1e20, 0.1),
    ("CONFIG GET", "maxmemory"),
    (b"CLIENT SETNAME", "x"),
    ("XADD", "s", "*", "e", memoryview(b"view"), "b", bytearray(b"array"), "big", b"x" * 20_000),
    ("XACK", "tt:events", "projector", b"1712-0", b"1712-1", "1713-7"),
    ("XACK", "tt:événements", "projector", *(f"{n}-0".encode() for n in range(5000))),
]


@pytest.mark.parametrize("args", _ARGS)
def test_packs_the_bytes_redis_py_packs(args: tuple[Any, ...]) -> None:
    python = Connection()
    fast = type("Fast", (HiredisPacking, Connection), {})()
    assert b"".join(fast.pack_command(*args)) == b"".join(python.pack_command(*args))
    assert b"".join(fast.pack_commands([args, args])) == b"".join(python.pack_commands([args, args]))


def test_what_cannot_be_sent_is_a_data_error() -> None:
    fast = type("Fast", (HiredisPacking, Connection), {})()
    with pytest.raises(DataError):
        fast.pack_command("SET", "k", None)
    with pytest.raises(DataError):
        fast.pack_command("SET", "k", True)
    with pytest.raises(DataError):
        fast.pack_command("SET", memoryview(b"k"), None)


async def test_a_fast_packing_client_round_trips_values_and_pipelines(redis_url: str, redis: Redis) -> None:
    client = fast_packing(connect(redis_url))
    assert fast_packing(client) is client and issubclass(client.connection_pool.connection_class, Connection)
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
        assert type(client.connection_pool._available_connections[0]).__name__ == "HiredisConnection"
    finally:
        await client.aclose()
