"""A real gateway and projector with auth on (users alice and bob), shared by a module's tests.

``secured_cluster(mode="jwt")`` makes the same users JWT users (``TT_AUTH=jwt``, a Supabase-style
secret): the isolation tests run both ways.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from redis import Redis

from shared.keys import Keys
from tests.chaos.harness import Cluster
from tests.support.jwts import SUPABASE_SECRET, supabase_token
from tests.support.processes import ServiceProcess

# Supabase-style JWTs, so one string serves both modes: an opaque API token (its hash in
# TT_API_TOKENS) with TT_AUTH=1, a JWT whose ``sub`` is the user with TT_AUTH=jwt.
ALICE, BOB = (supabase_token(user, ttl_s=24 * 3600) for user in ("alice", "bob"))


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
    with secured_cluster(redis_url, tmp_path_factory, "tokens") as cluster:
        yield cluster


@contextlib.contextmanager
def secured_cluster(redis_url: str, tmp_path_factory: pytest.TempPathFactory, mode: str) -> Iterator[Secured]:
    """A gateway and projector whose users come from API tokens (``tokens``) or JWTs (``jwt``)."""
    tokens = ",".join(
        f"{u}:{hashlib.sha256(t.encode()).hexdigest()}" for u, t in (("alice", ALICE), ("bob", BOB))
    )
    users = {"TT_AUTH": "1", "TT_API_TOKENS": tokens}
    if mode == "jwt":
        users = {"TT_AUTH": "jwt", "TT_JWT_SECRET": SUPABASE_SECRET, "TT_JWT_AUDIENCE": "authenticated"}
    cluster = Cluster(
        redis_url,
        tmp_path_factory.mktemp(f"secured-{mode}"),
        TT_SESSION_SECRET="s" * 64,
        TT_MAX_ACTIVE_RUNS="3",
        TT_SUBMIT_RATE="0/min",
        TT_MAX_WAIT_S="0.3",
        TT_SSE_MAX_PER_USER="20",
        # the stream cap is per gateway process (per worker): one, so the cap test counts it exactly
        TT_GATEWAY_WORKERS="1",
        TT_LOG_LEVEL="DEBUG",
    )
    gateway = cluster.gateway(**users)
    redis = Redis.from_url(redis_url)
    try:
        cluster.projector.start(30.0)
        gateway.start(30.0)
        yield Secured(gateway, cluster.projector, cluster.keys, redis, cluster.log_dir)
    finally:
        gateway.stop()
        cluster.projector.stop()
        redis.close()
