"""Webhook deliveries, derived from the global log (DESIGN §9: the outbox is the log).

Two loops, in the projector process (it already consumes ``tt:events`` and runs beside every
stack; replicas share the ``webhooks`` consumer group, so each terminal event is derived once,
and the due-set claim below lets any replica's loop send any delivery):
- ``derive``: reads ``tt:events`` through the ``webhooks`` group; for an event after which the
  run has ended, and whose run asked for a webhook of that kind, it records the delivery (a hash
  and an entry in the due set, both only if absent: re-deriving after a crash changes nothing)
  and then acks. No second write has to be kept consistent with the event: it is derived.
- ``deliver_due``: claims due deliveries (pushing their due time past a lease, atomically),
  resolves and checks the target (SSRF) before connecting, signs (Standard Webhooks 1.0) and
  POSTs, and appends each attempt as a ``WebhookAttempted`` event. 2xx ends it (delivered),
  410 ends it (disabled); anything else retries with exponential backoff and full jitter until
  ``max_age_s`` after the run ended (dead). ``webhook-id`` is the same on every attempt.

Besides the run's own webhook, each operator endpoint of the run's user
(services/projector/endpoints.py) gets its own delivery of the same body, ``webhook-id``
``msg_<runId>_<name>``, signed with that endpoint's secret; a 410 from one disables the endpoint
for every later delivery too (``Keys.webhook_endpoints_disabled``).
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from services.projector.endpoints import NONE, Endpoints
from shared.clock import millis, redis_now
from shared.events import (
    DeliveryOutcome,
    RunCancellationConfirmed,
    RunCancelled,
    RunCompleted,
    RunFailed,
    WebhookAttempted,
    WebhookEventType,
)
from shared.keys import WEBHOOKS_GROUP, Keys
from shared.run_state import RunState
from shared.store import EventStore, Refused, entry_run_id
from shared.webhooks import AllowList, Resolver, Target, UnsafeTarget, headers, resolve, resolve_target

logger = logging.getLogger(__name__)

_KIND: dict[str, WebhookEventType] = {
    "completed": "run.completed",
    "failed": "run.failed",
    "cancelled": "run.cancelled",
    "timeout": "run.timed_out",
}
_ENDING = (RunCompleted, RunFailed, RunCancellationConfirmed, RunCancelled)
"""A cancel of a queued run ends it too (its RunCancelled is its last event)."""
_RECORD = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('HSET', KEYS[1], 'run', ARGV[3], 'url', ARGV[4], 'kind', ARGV[5], 'body', ARGV[6],
  'endpoint', ARGV[7], 'user', ARGV[8], 'attempts', 0, 'since', ms)
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[2], 'NX', ms, ARGV[1])
return 1
"""
"""Record a delivery once (re-deriving it after a crash changes nothing), due at once."""
_CLAIM = """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if (not score) or tonumber(score) > tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
return 1
"""
"""Take a due delivery: its due time moves past the lease, so no other loop sends it meanwhile."""


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    allow: AllowList
    base_backoff_s: float = 5.0
    max_backoff_s: float = 3600.0
    max_age_s: float = 24 * 3600.0
    timeout_s: float = 10.0
    lease_s: float = 60.0


@dataclass(frozen=True, slots=True)
class Delivery:
    """One recorded delivery, as its hash holds it (``endpoint`` empty: the run's own webhook)."""

    delivery_id: str
    run_id: str
    url: str
    kind: str
    body: bytes
    endpoint: str
    user_id: str
    since_ms: int

    @classmethod
    def of(cls, delivery_id: str, raw: dict[bytes, bytes]) -> Delivery:
        text = {k.decode(): v.decode() for k, v in raw.items() if k != b"body"}
        return cls(
            delivery_id, text["run"], text["url"], text["kind"], raw[b"body"],
            text.get("endpoint", ""), text.get("user", ""), int(text["since"]),
        )  # fmt: skip

    @property
    def disabled_field(self) -> str:
        return f"{self.user_id}/{self.endpoint}"


def _entries(reply: Any) -> list[tuple[Any, dict[Any, Any]]]:
    """One stream's entries from RESP2 ``[[stream, entries]]`` or a RESP3 map; fields as a dict."""
    if not reply:
        return []
    raw = next(iter(reply.values())) if isinstance(reply, dict) else reply[0][1]
    out: list[tuple[Any, dict[Any, Any]]] = []
    for entry_id, fields in raw:
        if isinstance(fields, list):
            fields = dict(zip(fields[::2], fields[1::2], strict=True))
        out.append((entry_id, fields or {}))
    return out


def payload(state: RunState, kind: WebhookEventType) -> bytes:
    """The body: Standard Webhooks' ``type``/``timestamp``/``data``; the same bytes every attempt."""
    result = state.result
    data: dict[str, Any] = {
        "runId": state.run_id,
        "status": state.status,
        "symbol": state.symbol,
        "decision": result.decision if result else None,
        "confidence": result.confidence if result else None,
        "error": {"code": state.error.code, "message": state.error.message} if state.error else None,
    }
    ended = state.completed_at or datetime.now(UTC)
    return json.dumps({"type": kind, "timestamp": ended.isoformat(), "data": data}).encode()


def backoff(attempt: int, policy: DeliveryPolicy) -> float:
    """Full jitter: uniform over (0, base·2^(attempt-1)], capped; never below a tenth of base."""
    ceiling = min(policy.max_backoff_s, policy.base_backoff_s * 2 ** (attempt - 1))
    return max(policy.base_backoff_s / 10, random.uniform(0, ceiling))


class WebhookDeliverer:
    def __init__(
        self,
        redis: Redis,
        store: EventStore,
        policy: DeliveryPolicy,
        *,
        consumer: str,
        resolver: Resolver = resolve,
        endpoints: Endpoints = NONE,
    ) -> None:
        self.redis, self.store, self.policy, self.endpoints = redis, store, policy, endpoints
        self.keys: Keys = store.keys
        self.consumer, self.resolver = consumer, resolver
        self._claim = redis.register_script(_CLAIM)
        self._record_delivery = redis.register_script(_RECORD)
        self.http = httpx.AsyncClient(timeout=policy.timeout_s, follow_redirects=False, trust_env=False)

    async def close(self) -> None:
        await self.http.aclose()

    async def ensure_group(self) -> None:
        try:
            await self.redis.xgroup_create(self.keys.events, WEBHOOKS_GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def derive(self, block_ms: int = 1000, count: int = 200) -> int:
        """Record the deliveries the next log entries call for (own pending ones first); ack them."""
        streams: Any = {self.keys.events: "0"}
        entries = _entries(await self.redis.xreadgroup(WEBHOOKS_GROUP, self.consumer, streams, count=count))
        if not entries:
            streams = {self.keys.events: ">"}
            reply = await self.redis.xreadgroup(
                WEBHOOKS_GROUP, self.consumer, streams, count=count, block=block_ms
            )
            entries = _entries(reply)
        runs = {entry_run_id(fields) for entry_id, fields in entries if self._may_end(entry_id, fields)}
        for run_id in runs:
            await self._schedule(run_id)
        if entries:
            await self.redis.xack(self.keys.events, WEBHOOKS_GROUP, *[entry_id for entry_id, _ in entries])
        return len(runs)

    def _may_end(self, entry_id: Any, fields: dict[Any, Any]) -> bool:
        """Whether the entry holds an event after which its run may have ended."""
        if not fields:  # trimmed while pending (Redis 6.2 answers it with no fields): just ack it
            return False
        event = self.store.decode_fields(str(entry_id), fields)
        return isinstance(event, _ENDING) and not (isinstance(event, RunFailed) and event.will_retry)

    async def _schedule(self, run_id: str) -> None:
        state = await self.store.state(run_id)
        if state is None or not state.terminal:
            return
        kind = _KIND[state.status]
        targets: list[tuple[str, str, str]] = []  # (webhook-id, URL, operator endpoint's name)
        if state.webhook is not None and kind in state.webhook.events:
            targets.append((f"msg_{run_id}", state.webhook.url, ""))  # one terminal event: one delivery
        mine = [e for e in self.endpoints.of(state.user_id) if kind in e.events]
        targets += [(e.delivery_id(run_id), e.url, e.name) for e in mine]
        body, ttl = payload(state, kind), int(self.policy.max_age_s) + 3600
        for delivery_id, url, endpoint in targets:
            key = self.keys.webhook_delivery(delivery_id)
            args: list[str | bytes | int] = [delivery_id, ttl, run_id, url, kind, body]
            args += [endpoint, state.user_id]
            await self._record_delivery(keys=[key, self.keys.webhooks_due], args=args)

    async def _now_ms(self) -> int:
        return millis(await redis_now(self.redis))

    async def deliver_due(self, limit: int = 20) -> int:
        """Attempt every delivery that is due (one by one); returns how many were attempted."""
        now = await self._now_ms()
        due: list[Any] = await self.redis.zrangebyscore(
            self.keys.webhooks_due, "-inf", now, start=0, num=limit
        )
        done = 0
        for raw in due:
            delivery_id = raw.decode() if isinstance(raw, bytes) else str(raw)
            lease = now + int(self.policy.lease_s * 1000)
            if await self._claim(keys=[self.keys.webhooks_due], args=[delivery_id, now, lease]):
                await self._attempt(delivery_id, now)
                done += 1
        return done

    async def _attempt(self, delivery_id: str, now_ms: int) -> None:
        raw: Any = await self.redis.hgetall(self.keys.webhook_delivery(delivery_id))
        if b"run" not in raw:
            await self.redis.zrem(self.keys.webhooks_due, delivery_id)
            return
        delivery = Delivery.of(delivery_id, raw)
        attempt = int(await self.redis.hincrby(self.keys.webhook_delivery(delivery_id), "attempts", 1))
        outcome, code, error = await self._send(delivery, now_ms)
        next_at = None
        if outcome == "retrying":
            if now_ms - delivery.since_ms >= self.policy.max_age_s * 1000:
                outcome = "dead"
            else:
                next_at = now_ms + int(backoff(attempt, self.policy) * 1000)
        await self._record(delivery, attempt, outcome, code, error, next_at)
        if next_at is not None:
            await self.redis.zadd(self.keys.webhooks_due, {delivery_id: next_at})
        else:
            await self.redis.zrem(self.keys.webhooks_due, delivery_id)
            await self.redis.delete(self.keys.webhook_delivery(delivery_id))

    async def _send(self, d: Delivery, now_ms: int) -> tuple[DeliveryOutcome, int | None, str]:
        if d.endpoint and await self._disabled(d):
            return "disabled", None, f"the endpoint {d.endpoint!r} answered 410 Gone before: it is disabled"
        try:
            target = await resolve_target(d.url, self.policy.allow, self.resolver)
        except UnsafeTarget as exc:
            return "refused", None, str(exc)
        secret = await self._secret(d)
        if secret is None:
            gone = f"the operator endpoint {d.endpoint!r} is no longer configured"
            return "dead", None, gone if d.endpoint else "the run's webhook secret has expired"
        signed = headers(secret, d.delivery_id, now_ms // 1000, d.body)
        try:
            response = await self._post(target, d.body, signed)
        except httpx.HTTPError as exc:
            return "retrying", None, f"{type(exc).__name__}: {exc}"[:300]
        status = response.status_code
        if 200 <= status < 300:
            return "delivered", status, ""
        if status == 410:
            if d.endpoint:
                await self.redis.hset(self.keys.webhook_endpoints_disabled, d.disabled_field, d.url)
            return "disabled", status, "the receiver answered 410 Gone"
        return "retrying", status, f"HTTP {status}"

    async def _disabled(self, d: Delivery) -> bool:
        """Whether this endpoint answered 410 at this URL before (a new URL enables it again)."""
        gone: Any = await self.redis.hget(self.keys.webhook_endpoints_disabled, d.disabled_field)
        return gone is not None and bytes(gone).decode() == d.url

    async def _secret(self, d: Delivery) -> str | None:
        """The signing secret: the operator endpoint's (from the configuration) or the run's."""
        if d.endpoint:
            endpoint = self.endpoints.get(d.user_id, d.endpoint)
            return endpoint.secret if endpoint is not None else None
        secret: Any = await self.redis.get(self.keys.webhook_secret(d.run_id))
        return None if secret is None else bytes(secret).decode()

    async def _post(self, target: Target, body: bytes, signed: dict[str, str]) -> httpx.Response:
        """Connect to the address that was checked (no second lookup to rebind), name the host."""
        address = f"[{target.address}]" if ":" in target.address else target.address
        url = f"{target.scheme}://{address}:{target.port}{target.path}"
        extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
        return await self.http.post(
            url, content=body, headers={**signed, "host": target.host}, extensions=extensions
        )

    async def _record(
        self,
        d: Delivery,
        attempt: int,
        outcome: DeliveryOutcome,
        code: int | None,
        error: str,
        next_ms: int | None,
    ) -> None:
        next_at = (
            None if next_ms is None else datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=next_ms)
        )
        run_id = d.run_id
        event = WebhookAttempted(
            run_id=run_id,
            webhook_id=d.delivery_id,
            event_type=d.kind,  # type: ignore[arg-type]
            endpoint=d.endpoint or None,
            attempt=attempt,
            outcome=outcome,
            status_code=code,
            error=error,
            next_attempt_at=next_at,
        )
        try:
            await self.store.append(event)
        except Refused as refused:  # the run's stream expired: the attempt happened all the same
            logger.warning("webhook attempt not recorded", extra={"run_id": run_id, "reason": refused.reason})
        if outcome != "delivered":
            fields = {"run_id": run_id, "webhook_id": d.delivery_id, "outcome": outcome}
            logger.info("webhook attempt", extra={**fields, "status_code": code})
