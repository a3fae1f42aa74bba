"""The Redis checkpointer passes LangGraph's official conformance suite, on a real Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from langgraph.checkpoint.conformance import checkpointer_test, validate
from redis.asyncio import Redis

from services.runner.graph.checkpoint import RedisSaver
from shared.keys import Keys
from shared.redis_io import connect


async def test_the_official_conformance_suite_passes_every_base_capability(redis_url: str) -> None:
    @checkpointer_test(name="RedisSaver")
    async def saver() -> AsyncIterator[RedisSaver]:
        client: Redis = connect(redis_url)
        await client.flushdb()
        try:
            yield RedisSaver(client, Keys(), ttl_s=3600)
        finally:
            await client.aclose()

    report = await validate(saver)
    report.print_report()
    assert report.passed_all_base()


async def test_a_thread_expires_with_the_run_retention(redis: Redis) -> None:
    saver = RedisSaver(redis, Keys(), ttl_s=120)
    config = {"configurable": {"thread_id": "run-1", "checkpoint_ns": ""}}
    from langgraph.checkpoint.base import empty_checkpoint

    saved = await saver.aput(config, empty_checkpoint(), {"step": 0}, {})  # type: ignore[arg-type]
    await saver.aput_writes(saved, [("x", 1)], task_id="t1")
    for kind in ("cps", "writes"):
        assert 0 < await redis.ttl(f"{Keys().graph('run-1')}:{kind}") <= 120
    assert await saver.aget_tuple(config) is not None  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["cps"])
async def test_no_checkpoint_means_none(redis: Redis, kind: str) -> None:
    saver = RedisSaver(redis, Keys(), ttl_s=60)
    assert await saver.aget_tuple({"configurable": {"thread_id": "nope"}}) is None
