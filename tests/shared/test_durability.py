"""A submit waits (WAIT) for a replica when the primary has one; a real primary and replica."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import AsyncIterator, Iterator

import pytest
from redis.asyncio import Redis

from shared.batcher import ScriptBatcher
from shared.durability import ReplicaWait
from shared.keys import Keys
from shared.redis_io import connect
from shared.redis_server import RedisServer
from shared.store import EventStore
from shared.submits import Duplicate, Submitted, Unreplicated
from tests.shared.test_store import request

WAIT_MS = 300


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RedisServer, RedisServer]]:
    root = tmp_path_factory.mktemp("replicated")
    primary = RedisServer(root / "primary")
    replica = RedisServer(root / "replica", extra_args=("--replicaof", "127.0.0.1", str(primary.port)))
    with primary, replica:
        yield primary, replica


@pytest.fixture
async def clients(pair: tuple[RedisServer, RedisServer]) -> AsyncIterator[tuple[Redis, Redis]]:
    primary, replica = (connect(server.url) for server in pair)
    deadline = time.monotonic() + 10
    while (await replica.info("replication"))["master_link_status"] != "up":
        assert time.monotonic() < deadline, "the replica never synced"
        await replica.execute_command("PING")
    try:
        yield primary, replica
    finally:
        await primary.aclose()
        await replica.aclose()


def _store(redis: Redis, keys: Keys, replicas: int = 1) -> EventStore:
    wait = ReplicaWait(redis, keys.replicated, replicas=replicas, timeout_ms=WAIT_MS, cache_s=0.0)
    return EventStore(redis, keys, submits=ScriptBatcher(redis), replicas=wait)


async def test_an_acknowledged_submit_is_already_on_the_replica(clients: tuple[Redis, Redis]) -> None:
    primary, replica = clients
    keys = Keys(f"tt{time.monotonic_ns()}:")
    for _ in range(20):
        req = request()
        outcome = await _store(primary, keys).submit(req, idempotency=("k" + req.run_id, req.run_id))
        assert isinstance(outcome, Submitted)
        assert await replica.exists(keys.run(req.run_id), keys.idem("alice", "k" + req.run_id)) == 2


async def test_a_replica_that_does_not_confirm_in_time_means_no_acknowledgement(
    clients: tuple[Redis, Redis], pair: tuple[RedisServer, RedisServer]
) -> None:
    """The replica is frozen (SIGSTOP): the run is written on the primary, the submit is not
    acknowledged after the bound; once the replica is back, a repeat with the same key answers
    the same run."""
    primary, _ = clients
    keys, req = Keys(f"tt{time.monotonic_ns()}:"), request()
    process = pair[1].process
    assert process is not None
    other = connect(pair[0].url)  # a repeat on another connection, which never wrote the run
    os.kill(process.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        outcome = await _store(primary, keys).submit(req, idempotency=("key-1", req.run_id))
        waited = time.monotonic() - started
        repeat = await _store(other, keys).submit(request(), idempotency=("key-1", "other"))
    finally:
        os.kill(process.pid, signal.SIGCONT)
    assert outcome == Unreplicated(req.run_id, 0)
    assert WAIT_MS / 1000 <= waited < WAIT_MS / 1000 + 2
    assert repeat == Unreplicated(None, 0), "a repeat answered before a replica had the run"
    assert await primary.exists(keys.run(req.run_id))
    again = await _store(other, keys).submit(request(), idempotency=("key-1", "other"))
    await other.aclose()
    assert again == Duplicate(req.run_id)


async def test_without_replicas_nothing_waits(redis: Redis, keys: Keys) -> None:
    """The suite's Redis has no replica: ``needed`` is 0 and a submit is a plain acknowledged submit."""
    wait = ReplicaWait(redis, keys.replicated, replicas=1, timeout_ms=5000)
    assert await wait.needed() == 0
    started = time.monotonic()
    outcome = await EventStore(redis, keys, replicas=wait).submit(request())
    assert isinstance(outcome, Submitted) and time.monotonic() - started < 1.0
    assert await ReplicaWait(redis, keys.replicated, replicas=0, timeout_ms=5000).needed() == 0


async def test_replicas_zero_turns_waiting_off_even_with_a_replica(clients: tuple[Redis, Redis]) -> None:
    primary, _ = clients
    assert await ReplicaWait(primary, "c", replicas=0, timeout_ms=WAIT_MS).needed() == 0
    assert await ReplicaWait(primary, "c", replicas=3, timeout_ms=WAIT_MS).needed() == 1
