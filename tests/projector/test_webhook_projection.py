"""The projector service delivers webhooks itself; its read model shows the attempts; rebuild agrees."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import standardwebhooks
from redis.asyncio import Redis

from services.projector.rebuild import rebuild
from services.projector.service import ProjectorService
from services.projector.settings import ProjectorSettings
from shared.events import RunCompleted, RunRequested, RunStarted, WebhookSpec
from shared.ids import new_run_id
from shared.keys import Keys
from shared.store import EventStore
from shared.webhooks import new_secret
from tests.projector.support import checksum, db_states, until_caught_up

MakeSettings = Callable[..., ProjectorSettings]


async def test_the_service_delivers_and_projects_attempts_that_rebuild_reproduces(
    redis: Redis, keys: Keys, make_settings: MakeSettings
) -> None:
    secret, codes, verified = new_secret(), [503], []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode().split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in head[1:] if h)}
        body = await reader.readexactly(int(headers["content-length"]))
        verified.append(standardwebhooks.Webhook(secret).verify(body, headers))
        code = codes.pop(0) if codes else 204
        writer.write(f"HTTP/1.1 {code} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".encode())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    store = EventStore(redis, keys)
    run_id = new_run_id()
    request = RunRequested(
        run_id=run_id,
        user_id="u",
        symbol="AAPL",
        model_id="offline",
        analysts=("market",),
        webhook=WebhookSpec(url=f"http://127.0.0.1:{port}/h"),
    )
    await store.submit(request, webhook_secret=secret)
    await store.append(RunStarted(run_id=run_id, runner_id="r", attempt=1, steps=()), fence="f")
    await store.append(RunCompleted(run_id=run_id), fence="f")
    settings = make_settings(
        TT_WEBHOOK_ALLOWED_HOSTS="127.0.0.1", TT_WEBHOOK_INTERVAL_S="0.05", TT_WEBHOOK_BACKOFF_S="0.05"
    )
    service = ProjectorService(settings)
    await service.start()
    try:
        async with asyncio.timeout(20):
            while len(verified) < 2 or await redis.zcard(keys.webhooks_due):
                await asyncio.sleep(0.05)
        await until_caught_up(service, redis, keys.events)
    finally:
        await service.stop()
        server.close()
    projected = db_states(settings.db_path)[run_id]
    assert [(d.status, d.attempts) for d in projected.deliveries] == [("delivered", 2)]
    assert projected.status == "completed" and verified[0]["type"] == "run.completed"
    incremental = checksum(settings.db_path)
    await rebuild(settings, from_log=True)
    assert checksum(settings.db_path) == incremental
