"""A real gateway and projector with auth on (users alice and bob), shared by a module's tests."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from redis import Redis

from shared.keys import Keys
from tests.chaos.harness import Cluster
from tests.support.processes import ServiceProcess

ALICE, BOB = "alice-secret-token-7f3a", "bob-secret-token-91c2"


@dataclass
class Secured:
    gateway: ServiceProcess
    projector: ServiceProcess
    keys: Keys
    redis: Redis
    log_dir: Path

    @property
    def url(self) -> str:
        return self.gateway.url


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def secured(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    """No runner: runs stay pending, which is what isolation and limit checks need."""
    tokens = ",".join(
        f"{u}:{hashlib.sha256(t.encode()).hexdigest()}" for u, t in (("alice", ALICE), ("bob", BOB))
    )
    cluster = Cluster(
        redis_url,
        tmp_path_factory.mktemp("secured"),
        TT_AUTH="1",
        TT_API_TOKENS=tokens,
        TT_SESSION_SECRET="s" * 64,
        TT_MAX_ACTIVE_RUNS="3",
        TT_SUBMIT_RATE="0/min",
        TT_MAX_WAIT_S="0.3",
        TT_SSE_MAX_PER_USER="20",
        TT_LOG_LEVEL="DEBUG",
    )
    gateway = cluster.gateway()
    redis = Redis.from_url(redis_url)
    try:
        cluster.projector.start(30.0)
        gateway.start(30.0)
        yield Secured(gateway, cluster.projector, cluster.keys, redis, cluster.log_dir)
    finally:
        gateway.stop()
        cluster.projector.stop()
        redis.close()
