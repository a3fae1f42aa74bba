"""What the app's lifespan owns (clients, store, hub) and the request-scoped helpers on top."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from fastapi import Request
from redis.asyncio import Redis

from services.gateway.auth import Authenticator, Caller
from services.gateway.flight import SingleFlight
from services.gateway.hub import Hub
from services.gateway.limits import RateLimiter, StreamSlots
from services.gateway.metrics import metrics
from services.gateway.projectors import ProjectorPool
from services.gateway.queries import RunReader
from services.gateway.settings import GatewaySettings
from shared.batcher import ScriptBatcher
from shared.durability import ReplicaWait
from shared.models import ModelSpec, load_registry
from shared.redis_io import connect
from shared.run_state import RunState
from shared.store import Entry, EventStore

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class Runtime:
    settings: GatewaySettings
    redis: Redis
    reader: Redis
    store: EventStore
    hub: Hub
    projectors: ProjectorPool
    runs: RunReader
    auth: Authenticator
    limiter: RateLimiter
    models: dict[str, ModelSpec]
    lookups: SingleFlight[list[Entry]] = field(default_factory=SingleFlight)
    streams: StreamSlots = field(default_factory=lambda: StreamSlots(0))

    async def wait_terminal(self, run_id: str, user_id: str, timeout_s: float) -> RunState | None:
        """The run once it has ended, or as it is when ``timeout_s`` passes (None: not visible)."""
        state = await self.runs.get(run_id, user_id)
        if state is None or state.terminal or timeout_s <= 0:
            return state
        listener = await self.hub.join(run_id, state.last_event_id or "0-0", 1024)
        try:
            async with asyncio.timeout(timeout_s):
                while not listener.dropped and not (await listener.drain())[1]:
                    pass
        except TimeoutError:
            pass
        finally:
            self.hub.leave(listener)
        return await self.runs.get(run_id, user_id)


@contextlib.asynccontextmanager
async def open_runtime(settings: GatewaySettings) -> AsyncIterator[Runtime]:
    """Build every client, start the SSE reader; close all of it on exit."""
    common = settings.common
    name = f"tt-gateway:{settings.process_id}"
    redis = connect(common.redis, max_connections=settings.redis_pool_size, client_name=name)
    reader = connect(common.redis, blocking=True, client_name=f"{name}:sse")
    projectors = ProjectorPool(
        settings.projectors, timeout_s=settings.projector_timeout_s, interval_s=settings.projector_probe_s
    )
    submits = ScriptBatcher(redis)  # concurrent submits share one round trip
    replicas = ReplicaWait(
        redis, common.keys.replicated, replicas=common.submit_replicas, timeout_ms=common.submit_wait_ms
    )
    store = EventStore(redis, common.keys, run_ttl_s=common.run_ttl_s, submits=submits, replicas=replicas)
    hub = Hub(
        reader,
        redis,
        store,
        common.keys,
        settings.process_id,
        block_ms=settings.sse_block_ms,
        heartbeat_s=settings.sse_heartbeat_s,
        on_drop=metrics().sse_dropped.inc,
    )
    runtime = Runtime(
        settings=settings,
        redis=redis,
        reader=reader,
        store=store,
        hub=hub,
        projectors=projectors,
        runs=RunReader(store, projectors),
        auth=Authenticator(settings),
        limiter=RateLimiter(redis, common.keys, *settings.submit_rate, calls=submits),
        models=load_registry(settings.models_path),
        streams=StreamSlots(settings.sse_max_per_user),
    )
    try:
        await projectors.start()
        await hub.start()
        yield runtime
    finally:
        await hub.stop()
        await submits.aclose()
        await projectors.stop()
        await reader.aclose()
        await redis.aclose()


# The dependencies are ``async def`` although they do no I/O: FastAPI runs a plain ``def``
# dependency in the thread pool, a thread hop on every request.


async def runtime_of(request: Request) -> Runtime:
    return runtime_from(request)


def runtime_from(request: Request) -> Runtime:
    """The app's runtime, read in the endpoint: the submit routes take it so, not as a second
    dependency, because FastAPI solves each dependency on every request (docs/benchmarks.md, row 1)."""
    runtime: Runtime = request.app.state.runtime
    return runtime


async def caller_of(request: Request) -> Caller:
    """FastAPI dependency: the authenticated caller (401/403 problems otherwise)."""
    runtime: Runtime = request.app.state.runtime
    return await runtime.auth.caller(request)


async def reader_of(runtime: Runtime, caller: Caller, run_id: str) -> str:
    """Whose view of ``run_id`` the caller reads: an admin reads any run as its owner does."""
    if caller.admin:
        return await runtime.store.owner(run_id) or caller.user_id
    return caller.user_id
