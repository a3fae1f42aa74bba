"""The wake-up multiplexer: one read over many streams, woken at once, never reading a stale cursor."""

from __future__ import annotations

import asyncio
import time

from redis.asyncio import Redis

from shared.multiplex import Entries, Multiplexer
from shared.redis_io import connect


async def test_a_stream_added_during_a_long_block_is_read_at_once_from_its_cursor(
    redis_url: str, redis: Redis
) -> None:
    got: list[tuple[str, list[str]]] = []

    def on_entries(key: str, entries: Entries) -> None:
        got.append((key, [entry_id for entry_id, _ in entries]))

    await redis.xadd("tt:mx:a", {"k": "1"}, id="1-1")
    await redis.xadd("tt:mx:a", {"k": "2"}, id="1-2")
    reader = connect(redis_url, blocking=True)
    mux = Multiplexer(reader, redis, "tt:wake:mx", on_entries, block_ms=30_000)
    task = asyncio.create_task(mux.run())
    try:
        await asyncio.sleep(0.2)  # blocked on the wake-up stream alone
        started = time.monotonic()
        mux.add("tt:mx:a", "1-1")
        await mux.wake("test")
        async with asyncio.timeout(5):
            while not got:
                await asyncio.sleep(0.01)
        assert time.monotonic() - started < 1.0  # not the 30 s block
        assert got == [("tt:mx:a", ["1-2"])]
        mux.discard("tt:mx:a")
        await redis.xadd("tt:mx:a", {"k": "3"}, id="1-3")
        await mux.wake("test")
        await asyncio.sleep(0.3)
        assert got == [("tt:mx:a", ["1-2"])]  # discarded: not read
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await mux.close()
        await reader.aclose()
    assert not await redis.exists("tt:wake:mx")


async def test_a_stream_re_added_from_another_id_during_a_read_is_read_again_from_there(
    redis_url: str, redis: Redis
) -> None:
    got: list[list[str]] = []
    for n in (1, 2, 3):
        await redis.xadd("tt:mx:b", {"k": str(n)}, id=f"1-{n}")
    reader = connect(redis_url, blocking=True)
    mux = Multiplexer(reader, redis, "tt:wake:mx2", lambda _k, e: got.append([i for i, _ in e]))
    mux.add("tt:mx:b", "1-2")
    reading = asyncio.create_task(mux.read_once())
    await asyncio.sleep(0)  # the read is sent with the cursor 1-2
    mux.discard("tt:mx:b")
    mux.add("tt:mx:b", "0-0")  # while the read (from 1-2) is in flight
    await reading
    assert got == []  # the reply was for the old cursor: dropped
    await mux.read_once()
    assert got == [["1-1", "1-2", "1-3"]]
    await mux.close()
    await reader.aclose()
