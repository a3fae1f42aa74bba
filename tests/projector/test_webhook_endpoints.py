"""Operator endpoints (``TT_WEBHOOK_ENDPOINTS``): every end of a user's runs is delivered there too.

A real receiver on 127.0.0.1 verifies each delivery with ``standardwebhooks`` under the secret of
the path it arrived on; the deliverer runs against the suite's real Redis.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import standardwebhooks
from redis.asyncio import Redis

from services.projector.endpoints import Endpoints, load
from services.projector.webhooks import DeliveryPolicy, WebhookDeliverer
from shared.config import ConfigError
from shared.events import RunCompleted, RunFailed, RunRequested, RunStarted, WebhookSpec
from shared.ids import new_run_id
from shared.keys import Keys
from shared.run_state import RunState
from shared.store import EventStore
from shared.webhooks import AllowList, new_secret
from tests.projector.conftest import projector_env

LOOPBACK = AllowList.parse(["127.0.0.1"])


@dataclass
class Receiver:
    """Verifies each request with the secret of its path; answers ``codes[path]`` in turn, then 200."""

    secrets: dict[str, str] = field(default_factory=dict)
    codes: dict[str, list[int]] = field(default_factory=dict)
    seen: list[tuple[str, str, str]] = field(default_factory=list)
    """(path, webhook-id, type) of every request, verified."""
    port: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode().split("\r\n")
        path = head[0].split()[1]
        headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in head[1:] if h)}
        body = await reader.readexactly(int(headers["content-length"]))
        payload = standardwebhooks.Webhook(self.secrets[path]).verify(body, headers)
        self.seen.append((path, headers["webhook-id"], payload["type"]))
        codes = self.codes.get(path)
        code = codes.pop(0) if codes else 200
        writer.write(f"HTTP/1.1 {code} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".encode())
        await writer.drain()
        writer.close()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    server = await asyncio.start_server(rec.handle, "127.0.0.1", 0)
    rec.port = server.sockets[0].getsockname()[1]
    async with server:
        yield rec


def endpoints(receiver: Receiver, users: dict[str, list[dict[str, Any]]]) -> Endpoints:
    """The configuration as an operator writes it (inline JSON), secrets known to the receiver."""
    for entries in users.values():
        for entry in entries:
            entry.setdefault("secret", new_secret())
            receiver.secrets[entry["url"]] = entry["secret"]
            entry["url"] = receiver.url(entry["url"])
    return load(json.dumps(users), LOOPBACK)


async def run_of(
    store: EventStore, user: str, *, webhook: str = "", secret: str = "", failed: bool = False
) -> str:
    run_id = new_run_id()
    spec = WebhookSpec(url=webhook) if webhook else None
    request = RunRequested(
        run_id=run_id, user_id=user, symbol="AAPL", model_id="offline", analysts=("market",), webhook=spec
    )
    await store.submit(request, webhook_secret=secret)
    await store.append(RunStarted(run_id=run_id, runner_id="r", attempt=1, steps=()), fence="f")
    end = RunFailed(run_id=run_id, code="x", message="no") if failed else RunCompleted(run_id=run_id)
    await store.append(end, fence="f")
    return run_id


async def settle(d: WebhookDeliverer, store: EventStore, run_ids: list[str], want: int) -> list[RunState]:
    """Derive and deliver until the runs' ``want`` deliveries all ended (no retry pending)."""
    await d.ensure_group()
    for _ in range(300):
        await d.derive(block_ms=10)
        await d.deliver_due()
        states = [s for s in [await store.state(r) for r in run_ids] if s is not None]
        ended = [x for s in states for x in s.deliveries if x.status != "retrying"]
        if len(ended) >= want:
            return states
        await asyncio.sleep(0.02)
    raise AssertionError(f"deliveries did not settle: {[s.deliveries for s in states]}")


def deliverer(redis: Redis, store: EventStore, configured: Endpoints) -> WebhookDeliverer:
    policy = DeliveryPolicy(LOOPBACK, base_backoff_s=0.05, timeout_s=2)
    return WebhookDeliverer(redis, store, policy, consumer="t", endpoints=configured)


async def test_every_end_of_the_users_runs_reaches_the_operator_endpoint_signed_with_its_secret(
    redis: Redis, keys: Keys, receiver: Receiver
) -> None:
    store = EventStore(redis, keys)
    configured = endpoints(
        receiver,
        {
            "alice": [{"url": "/ops", "name": "ops"}, {"url": "/failures", "events": ["run.failed"]}],
            "bob": [{"url": "/bob", "name": "bob"}],
        },
    )
    receiver.secrets["/own"] = own_secret = new_secret()
    receiver.codes["/ops"] = [503, 200]  # the operator endpoint is down for one attempt
    done = await run_of(store, "alice", webhook=receiver.url("/own"), secret=own_secret)
    delivering = deliverer(redis, store, configured)
    await settle(delivering, store, [done], want=2)  # first, so the 503 is its delivery's
    failed = await run_of(store, "alice", failed=True)
    other = await run_of(store, "carol")  # no endpoint configured for carol

    states = await settle(delivering, store, [done, failed, other], want=4)

    failures = next(e for e in configured.of("alice") if e.url.endswith("/failures")).name
    assert sorted(receiver.seen) == sorted([
        ("/own", f"msg_{done}", "run.completed"),
        ("/ops", f"msg_{done}_ops", "run.completed"),
        ("/ops", f"msg_{done}_ops", "run.completed"),  # the retry: the same webhook-id
        ("/ops", f"msg_{failed}_ops", "run.failed"),
        ("/failures", f"msg_{failed}_{failures}", "run.failed"),
    ])  # fmt: skip
    shown = {(d.webhook_id, d.endpoint, d.status, d.attempts) for s in states for d in s.deliveries}
    assert (f"msg_{done}", None, "delivered", 1) in shown
    assert (f"msg_{done}_ops", "ops", "delivered", 2) in shown
    assert states[2].deliveries == []
    raw = await redis.xrange(keys.events)
    for entry in configured.all:  # an operator's secret never reaches an event
        assert all(entry.secret.encode() not in fields[b"e"] for _, fields in raw)


async def test_a_410_disables_the_operator_endpoint_for_later_runs_and_a_new_url_enables_it(
    redis: Redis, keys: Keys, receiver: Receiver
) -> None:
    store = EventStore(redis, keys)
    receiver.codes["/gone"] = [410]
    configured = endpoints(receiver, {"alice": [{"url": "/gone", "name": "ops"}]})
    first = await run_of(store, "alice")
    [state] = await settle(deliverer(redis, store, configured), store, [first], want=1)
    assert [(d.status, d.status_code) for d in state.deliveries] == [("disabled", 410)]

    second = await run_of(store, "alice")
    [state] = await settle(deliverer(redis, store, configured), store, [second], want=1)

    assert [(d.status, d.attempts) for d in state.deliveries] == [("disabled", 1)]
    assert "answered 410 Gone before" in state.deliveries[0].error
    assert len(receiver.seen) == 1  # nothing sent to the disabled endpoint
    moved = endpoints(receiver, {"alice": [{"url": "/new", "name": "ops"}]})
    third = await run_of(store, "alice")
    [state] = await settle(deliverer(redis, store, moved), store, [third], want=1)
    assert [d.status for d in state.deliveries] == ["delivered"]


@pytest.mark.parametrize(
    ("config", "names"),
    [
        ('{"alice": [{"url": "https://h.example/", "secret": "nope-but-secret"}]}', "endpoint 1"),
        ('{"alice": [{"url": "ftp://h.example/", "secret": "%s"}]}', "url: a webhook URL is https"),
        ('{"alice": [{"url": "http://10.0.0.1/", "secret": "%s"}]}', "must be https"),
        ('{"alice": [{"url": "https://h.example/", "secret": "%s", "events": ["run.done"]}]}', "'run.done'"),
        ('{"alice": [{"url": "https://h.example/", "secret": "%s", "name": "Bad Name"}]}', "name must"),
        ('{"alice": [{"url": "https://h.example/", "secret": "%s", "extra": 1}]}', "'extra'"),
        (
            '{"alice": [{"url": "https://a.example/", "secret": "%s", "name": "x"},'
            ' {"url": "https://b.example/", "secret": "%s", "name": "x"}]}',
            "endpoint 2: the name 'x'",
        ),
        ('{"alice": {"url": "https://h.example/"}}', "user 'alice'"),
        ("{not json", "not JSON"),
    ],
)
def test_a_bad_entry_fails_naming_it_and_never_repeats_the_secret(config: str, names: str) -> None:
    secret = new_secret()
    with pytest.raises(ConfigError) as raised:
        load(config.replace("%s", secret), LOOPBACK)
    assert names in str(raised.value) and "TT_WEBHOOK_ENDPOINTS" in str(raised.value)
    assert secret not in str(raised.value) and "nope-but-secret" not in str(raised.value)


def test_a_toml_or_json_file_holds_the_same_configuration(tmp_path: Path) -> None:
    secret = new_secret()
    toml = tmp_path / "hooks.toml"
    toml.write_text(
        f'[["alice@example.com"]]\nurl = "https://h.example/t"\nsecret = "{secret}"\nname = "ops"\n'
    )
    as_json = tmp_path / "hooks.json"
    as_json.write_text(
        json.dumps({"alice@example.com": [{"url": "https://h.example/t", "secret": secret, "name": "ops"}]})
    )

    assert load(str(toml), LOOPBACK) == load(str(as_json), LOOPBACK)
    [endpoint] = load(str(toml), LOOPBACK).of("alice@example.com")
    assert endpoint.name == "ops" and len(endpoint.events) == 4 and secret not in repr(endpoint)
    with pytest.raises(ConfigError, match="cannot read the file"):
        load(str(tmp_path / "missing.toml"), LOOPBACK)


def test_the_projector_process_refuses_to_start_on_a_bad_entry(redis_url: str, tmp_path: Path) -> None:
    secret = new_secret()
    config = {
        "alice": [{"url": "https://h.example/", "secret": secret}, {"url": "gopher://x/", "secret": secret}]
    }
    env = {**os.environ, **projector_env(redis_url, tmp_path), "TT_WEBHOOK_ENDPOINTS": json.dumps(config)}
    started = subprocess.run(
        [sys.executable, "-m", "services.projector"], env=env, capture_output=True, text=True, timeout=30
    )
    assert started.returncode == 2, started.stderr
    assert "user 'alice', endpoint 2" in started.stderr and secret not in started.stderr + started.stdout
