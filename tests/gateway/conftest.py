"""A real gateway (uvicorn on a free port, in this process) over the session's real Redis."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from redis.asyncio import Redis

from services.gateway.app import create_app
from services.gateway.server import uvicorn_config
from services.gateway.settings import GatewaySettings
from shared.config import CommonSettings
from shared.keys import Keys
from shared.redis_server import free_port
from shared.store import EventStore
from tests.gateway.support import Runner


class RunningGateway:
    """One gateway server; ``stop()`` shuts it down like a process would."""

    def __init__(self, settings: GatewaySettings, http: str = "") -> None:
        """``http="httptools"``: uvicorn's own protocol (no transport extension: the queue path)."""
        self.settings = settings
        self.app = create_app(settings)
        overrides = {"http": http} if http else {}
        config = uvicorn_config(
            self.app, "127.0.0.1", settings.port, lifespan="on", timeout_graceful_shutdown=1, **overrides
        )
        self.server = uvicorn.Server(config)
        self.task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.port}"

    async def start(self) -> RunningGateway:
        self.task = asyncio.create_task(self._serve())
        async with asyncio.timeout(10):
            while not self.server.started:
                if self.task.done():
                    self.task.result()
                await asyncio.sleep(0.01)
        return self

    async def _serve(self) -> None:
        # uvicorn answers a failed lifespan startup with sys.exit(3). Raised in a task, SystemExit
        # escapes the event loop and stops it under pytest-asyncio's runner, so the fixture's
        # teardown then dies in pytest's session finish ("Event loop stopped before Future
        # completed") instead of the test failing. Here it is an error of this test only.
        try:
            await self.server.serve()
        except SystemExit as exc:
            raise RuntimeError(f"the gateway did not start (uvicorn exit code {exc.code})") from exc

    async def stop(self) -> None:
        self.server.should_exit = True
        if self.task is not None:
            await asyncio.wait_for(self.task, 10)


def make_settings(redis_url: str, state_dir: Path, **overrides: Any) -> GatewaySettings:
    common = CommonSettings(
        redis_url=redis_url,
        keys=Keys("tt:"),
        state_dir=state_dir,
        run_ttl_s=3600,
        log_format="text",
        log_level="INFO",
    )
    base = GatewaySettings(
        common=common,
        port=free_port(),
        projector_url=f"http://127.0.0.1:{free_port()}",
        projector_timeout_s=0.5,
        submit_rate=(1000, 60),
        sse_heartbeat_s=1.0,
        sse_block_ms=2000,
        session_secret="test-secret",
    )
    return dataclasses.replace(base, **overrides)


GatewayFactory = Callable[..., Awaitable[RunningGateway]]


@pytest.fixture
async def start_gateway(redis: Redis, redis_url: str, state_dir: Path) -> AsyncIterator[GatewayFactory]:
    """Start gateways with settings overrides; all are stopped at the end of the test."""
    started: list[RunningGateway] = []

    async def start(http: str = "", **overrides: Any) -> RunningGateway:
        gateway = await RunningGateway(make_settings(redis_url, state_dir, **overrides), http).start()
        started.append(gateway)
        return gateway

    try:
        yield start
    finally:
        for gateway in started:
            await gateway.stop()


@pytest.fixture
async def gateway(start_gateway: GatewayFactory) -> RunningGateway:
    return await start_gateway()


@pytest.fixture
async def client(gateway: RunningGateway) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
        yield http


@pytest.fixture
def store(redis: Redis, keys: Keys) -> EventStore:
    return EventStore(redis, keys, run_ttl_s=3600)


@pytest.fixture
def runner(store: EventStore) -> Runner:
    return Runner(store)


@pytest.fixture
def no_gc_during_parsing() -> Iterator[None]:
    """hypothesis ast.parse()s its lambdas; a collection that runs finalizers in the middle trips
    CPython 3.11's AST recursion check ("recursion depth mismatch"). Collect first, then pause."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
