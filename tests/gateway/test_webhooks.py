"""Webhooks from the outbox: signed deliveries a real receiver verifies with ``standardwebhooks``.

The receiver is a real HTTP server on 127.0.0.1; the deliverer runs against the suite's real
Redis. SSRF refusals are decided before any connection: a stub resolver answers private names,
and loopback addresses outside the allow-list (127.0.0.2) are refused, never connected to.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import standardwebhooks
from redis.asyncio import Redis

from services.projector.webhooks import DeliveryPolicy, WebhookDeliverer
from shared.events import RunCancelled, RunCompleted, RunStarted
from shared.keys import Keys
from shared.run_state import RunState
from shared.store import EventStore
from shared.webhooks import AllowList
from tests.gateway.conftest import RunningGateway
from tests.gateway.support import RUNS, result


@dataclass
class Receiver:
    """Answers ``codes`` in turn (then 200); verifies every request's signature when it can."""

    codes: list[int] = field(default_factory=list)
    secret: str = ""
    received: list[dict[str, Any]] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    port: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        lines = head.split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:] if h)}
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        code = self.codes.pop(0) if self.codes else 200
        self.ids.append(headers["webhook-id"])
        if code == 200:
            self.received.append(standardwebhooks.Webhook(self.secret).verify(body, headers))
        writer.write(f"HTTP/1.1 {code} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".encode())
        await writer.drain()
        writer.close()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    server = await asyncio.start_server(rec.handle, "127.0.0.1", 0)
    rec.port = server.sockets[0].getsockname()[1]
    async with server:
        yield rec


def deliverer(
    redis: Redis, store: EventStore, allowed: tuple[str, ...] = ("127.0.0.1",), **kw: Any
) -> WebhookDeliverer:
    policy = DeliveryPolicy(AllowList.parse(allowed), base_backoff_s=0.05, timeout_s=2)
    return WebhookDeliverer(redis, store, policy, consumer="t", **kw)


async def pump(
    d: WebhookDeliverer, store: EventStore, run_id: str, until: str, rounds: int = 200
) -> RunState:
    await d.ensure_group()
    for _ in range(rounds):
        await d.derive(block_ms=10)
        await d.deliver_due()
        state = await store.state(run_id)
        assert state is not None
        if state.deliveries and state.deliveries[-1].status == until:
            return state
        await asyncio.sleep(0.02)
    raise AssertionError(f"no delivery reached {until}: {state.deliveries}")


async def submit(gateway: RunningGateway, webhook: dict[str, Any]) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
        response = await http.post(RUNS, json={"symbol": "AAPL", "analysts": ["market"], "webhook": webhook})
    assert response.status_code == 202, response.text
    doc: dict[str, Any] = response.json()
    return doc


async def finish(store: EventStore, run_id: str) -> None:
    await store.append(RunStarted(run_id=run_id, runner_id="r", attempt=1, steps=()), fence="f")
    await store.append(RunCompleted(run_id=run_id, result=result()), fence="f")


async def test_a_receiver_down_for_a_while_gets_the_run_once_it_is_back(
    gateway: RunningGateway, receiver: Receiver, redis: Redis, keys: Keys, store: EventStore
) -> None:
    answer = await submit(gateway, {"url": f"http://127.0.0.1:{receiver.port}/hook"})
    run_id, receiver.secret = answer["runId"], answer["webhookSecret"]
    assert receiver.secret.startswith("whsec_")
    raw = await redis.xrange(keys.events)
    assert all(receiver.secret.encode() not in fields[b"e"] for _, fields in raw)  # never in an event
    receiver.codes = [503, 500, 503]  # down for three attempts
    await finish(store, run_id)
    state = await pump(deliverer(redis, store), store, run_id, "delivered")
    [delivery] = state.deliveries
    assert delivery.attempts == 4 and delivery.status_code == 200
    assert len(receiver.received) == 1 and receiver.received[0]["type"] == "run.completed"
    assert (
        receiver.received[0]["data"]["runId"] == run_id and receiver.received[0]["data"]["decision"] == "BUY"
    )
    assert set(receiver.ids) == {
        f"msg_{run_id}"
    }  # the same webhook-id on every attempt: receivers deduplicate
    assert await redis.zcard(keys.webhooks_due) == 0
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
        shown = (await http.get(f"{RUNS}/{run_id}")).json()
    assert [d["status"] for d in shown["deliveries"]] == ["delivered"]


async def test_a_given_secret_signs_and_unwanted_kinds_are_not_sent(
    gateway: RunningGateway, receiver: Receiver, redis: Redis, store: EventStore
) -> None:
    secret = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    url = f"http://127.0.0.1:{receiver.port}/"
    answer = await submit(gateway, {"url": url, "secret": secret, "events": ["run.cancelled"]})
    assert "webhookSecret" not in answer
    receiver.secret = secret
    other = await submit(gateway, {"url": url, "events": ["run.failed"]})
    await store.append(RunCancelled(run_id=answer["runId"], user_id="local"))
    await store.append(RunCancelled(run_id=other["runId"], user_id="local"))
    d = deliverer(redis, store)
    state = await pump(d, store, answer["runId"], "delivered")
    assert receiver.received[0]["type"] == "run.cancelled" and state.deliveries[0].attempts == 1
    quiet = await store.state(other["runId"])
    assert quiet is not None and quiet.deliveries == [] and len(receiver.ids) == 1


async def test_410_disables_and_rebuild_folds_the_attempts(
    gateway: RunningGateway, receiver: Receiver, redis: Redis, store: EventStore
) -> None:
    answer = await submit(gateway, {"url": f"http://127.0.0.1:{receiver.port}/"})
    receiver.codes = [410]
    await finish(store, answer["runId"])
    state = await pump(deliverer(redis, store), store, answer["runId"], "disabled")
    assert state.deliveries[0].attempts == 1 and len(receiver.ids) == 1
    assert state.status == "completed"  # attempts after the end leave the run as it ended


@pytest.mark.parametrize(
    ("url", "allowed", "why"),
    [
        ("https://127.0.0.2:{port}/", ("127.0.0.1",), "non-public"),  # loopback outside the allow-list
        ("https://internal.example:{port}/", ("127.0.0.1",), "non-public"),  # a stub resolves it privately
        ("https://metadata.example/", (), "non-public"),  # link-local: the cloud metadata address
        ("http://127.0.0.1:{port}/", (), "https"),  # allowed nowhere: plain http to loopback
    ],
)
async def test_unsafe_targets_are_refused_before_connecting(
    gateway: RunningGateway,
    receiver: Receiver,
    redis: Redis,
    store: EventStore,
    url: str,
    allowed: tuple[str, ...],
    why: str,
) -> None:
    names = {"internal.example": ["10.1.2.3"], "metadata.example": ["169.254.169.254"]}

    async def stub(host: str, port: int) -> list[str]:
        return names[host]

    answer = await submit(gateway, {"url": url.format(port=receiver.port)})
    await finish(store, answer["runId"])
    state = await pump(
        deliverer(redis, store, allowed, resolver=stub), store, answer["runId"], "refused", rounds=20
    )
    assert why in state.deliveries[0].error and state.deliveries[0].attempts == 1
    assert receiver.ids == []


async def test_a_webhook_url_that_is_not_http_is_422(client: httpx.AsyncClient) -> None:
    for url in ("ftp://example.com/", "https://user:pw@example.com/", "https://"):
        body = {"symbol": "AAPL", "analysts": ["market"], "webhook": {"url": url}}
        response = await client.post(RUNS, json=body)
        assert response.status_code == 422 and response.json()["field"].startswith("webhook"), response.text
