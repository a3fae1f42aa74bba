"""Auto-pipelined script calls (``shared.batcher``), against a real Redis."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from shared.batcher import ScriptBatcher
from shared.events import RunRequested
from shared.ids import new_run_id
from shared.keys import Keys
from shared.redis_io import connect
from shared.redis_server import free_port
from shared.scripts import ScriptCall
from shared.store import EventStore
from shared.submits import Capped, Submitted

ECHO = "return ARGV[1]"
FAIL_ON_BAD = "if ARGV[1] == 'bad' then return redis.error_reply('bad argument') end return ARGV[1]"


def call(source: str, value: str, sha: str) -> ScriptCall:
    return ScriptCall(sha, source, [], [value])


def request(user: str = "alice") -> RunRequested:
    return RunRequested(
        run_id=new_run_id(), user_id=user, symbol="AAPL", model_id="offline", analysts=("market",)
    )


async def test_calls_of_one_loop_turn_share_a_round_trip_and_keep_their_replies(redis: Redis) -> None:
    sha = await redis.script_load(ECHO)
    batcher = ScriptBatcher(redis)
    replies = await asyncio.gather(*(batcher.call(call(ECHO, f"v{i}", sha)) for i in range(50)))
    assert replies == [f"v{i}".encode() for i in range(50)]
    assert batcher.calls == 50
    assert batcher.flushes <= 2  # the first call's flush may start before the other 49 are queued
    await batcher.aclose()


async def test_an_error_reply_fails_only_its_own_call(redis: Redis) -> None:
    sha = await redis.script_load(FAIL_ON_BAD)
    batcher = ScriptBatcher(redis)
    results = await asyncio.gather(
        batcher.call(call(FAIL_ON_BAD, "a", sha)),
        batcher.call(call(FAIL_ON_BAD, "bad", sha)),
        batcher.call(call(FAIL_ON_BAD, "c", sha)),
        return_exceptions=True,
    )
    assert results[0] == b"a" and results[2] == b"c"
    assert isinstance(results[1], ResponseError) and "bad argument" in str(results[1])
    await batcher.aclose()


async def test_a_script_redis_forgot_is_loaded_again(redis: Redis) -> None:
    sha = await redis.script_load(ECHO)
    await redis.script_flush()
    batcher = ScriptBatcher(redis)
    replies = await asyncio.gather(*(batcher.call(call(ECHO, str(i), sha)) for i in range(5)))
    assert replies == [str(i).encode() for i in range(5)]
    await batcher.aclose()


async def test_a_connection_failure_fails_every_call_of_the_flush() -> None:
    dead = connect(f"redis://127.0.0.1:{free_port()}/0")
    batcher = ScriptBatcher(dead)
    results = await asyncio.gather(
        *(batcher.call(call(ECHO, "x", "0" * 40)) for _ in range(3)), return_exceptions=True
    )
    assert all(isinstance(r, RedisConnectionError) for r in results), results
    await batcher.aclose()
    await dead.aclose()


async def test_a_caller_that_goes_away_does_not_disturb_the_others(redis: Redis) -> None:
    sha = await redis.script_load(ECHO)
    batcher = ScriptBatcher(redis)
    leaving = asyncio.ensure_future(batcher.call(call(ECHO, "gone", sha)))
    staying = asyncio.ensure_future(batcher.call(call(ECHO, "here", sha)))
    leaving.cancel()
    assert await staying == b"here"
    with pytest.raises(asyncio.CancelledError):
        await leaving
    await batcher.aclose()


async def test_close_waits_for_calls_taken_and_refuses_new_ones(redis: Redis) -> None:
    sha = await redis.script_load(ECHO)
    batcher = ScriptBatcher(redis, max_batch=3, max_in_flight=1)
    pending = [asyncio.ensure_future(batcher.call(call(ECHO, str(i), sha))) for i in range(10)]
    await asyncio.sleep(0)  # every call is queued
    await batcher.aclose()
    assert all(p.done() for p in pending)
    assert [p.result() for p in pending] == [str(i).encode() for i in range(10)]
    assert batcher.flushes >= 4  # batches of at most three
    with pytest.raises(RuntimeError, match="closed"):
        await batcher.call(call(ECHO, "late", sha))


async def test_store_submits_through_the_batcher_keep_every_rule(redis: Redis, keys: Keys) -> None:
    """Concurrent submits in one pipeline: each gets its own outcome, and the cap still holds."""
    batcher = ScriptBatcher(redis)
    store = EventStore(redis, keys, submits=batcher)
    outcomes = await asyncio.gather(*(store.submit(request("bob"), cap=3) for _ in range(5)))
    assert sum(isinstance(o, Submitted) for o in outcomes) == 3
    assert sum(isinstance(o, Capped) for o in outcomes) == 2
    assert batcher.flushes < 5
    assert await redis.scard(keys.active("bob")) == 3
    assert await redis.xlen(keys.queue) == 3
    await batcher.aclose()
