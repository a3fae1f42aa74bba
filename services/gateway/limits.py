"""Per-user submission rate limit (a fixed window in Redis) and the request body size limit."""

from __future__ import annotations

from redis.asyncio import Redis
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.gateway.problems import Problem
from shared.keys import Keys
from shared.scripts import ScriptCall
from shared.store import ScriptSender

STREAM_RETRY_AFTER_S = 5

_COUNT = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
local ttl = redis.call('TTL', KEYS[1])
if ttl < 0 then redis.call('EXPIRE', KEYS[1], ARGV[1]); ttl = tonumber(ARGV[1]) end
return {n, ttl}
"""


class RateLimiter:
    """At most ``limit`` submissions per ``window_s`` per user (0 = unlimited)."""

    def __init__(
        self, redis: Redis, keys: Keys, limit: int, window_s: int, *, calls: ScriptSender | None = None
    ) -> None:
        """``calls``: what sends the counting script (the gateway's ``ScriptBatcher``, so the
        counts of concurrent submits share a round trip); by default its own EVALSHA."""
        self.keys, self.limit, self.window_s = keys, limit, window_s
        self._count = redis.register_script(_COUNT)
        self._calls = calls

    async def hit(self, user_id: str) -> None:
        if self.limit <= 0:
            return
        keys, args = [self.keys.rate(user_id)], [self.window_s]
        if self._calls is not None:
            reply = await self._calls.call(ScriptCall(self._count.sha, _COUNT, keys, args))
        else:
            reply = await self._count(keys=keys, args=args)
        count, ttl = reply
        if int(count) > self.limit:
            raise Problem(
                429,
                f"You submitted more than {self.limit} runs in {self.window_s} s; retry in {int(ttl)} s.",
                slug="rate-limited",
                headers={"Retry-After": str(max(int(ttl), 1))},
            )


class StreamSlots:
    """Open SSE streams per user in this process; ``take`` refuses past ``per_user`` (0 = no cap)."""

    def __init__(self, per_user: int) -> None:
        self.per_user = per_user
        self.open: dict[str, int] = {}

    def take(self, user_id: str) -> None:
        held = self.open.get(user_id, 0)
        if self.per_user and held >= self.per_user:
            raise Problem(
                429,
                f"You already follow {held} run streams here (the limit); close one and retry.",
                slug="too-many-streams",
                headers={"Retry-After": str(STREAM_RETRY_AFTER_S)},
                extra={"limit": self.per_user},
            )
        self.open[user_id] = held + 1

    def give_back(self, user_id: str) -> None:
        held = self.open.get(user_id, 0) - 1
        if held > 0:
            self.open[user_id] = held
        else:
            self.open.pop(user_id, None)


class BodyLimit:
    """ASGI middleware: a body over ``max_bytes`` (declared or streamed) is answered 413."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers", []))
        declared = headers.get(b"content-length")
        if declared is None and b"transfer-encoding" not in headers:
            # No body (RFC 9112 6.3), as on every GET: nothing to bound, and no buffer or wrapper
            # held for the request's life (an SSE stream's is hours, 10,000 of them a process).
            await self.app(scope, receive, send)
            return
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._refuse(scope, receive, send)
            return
        buffered = await self._read_body(receive)
        if buffered is None:
            await self._refuse(scope, receive, send)
            return

        async def replay() -> Message:
            return buffered.pop(0) if buffered else await receive()

        await self.app(scope, replay, send)

    async def _read_body(self, receive: Receive) -> list[Message] | None:
        """The request's body messages (bodies are small), or None when over the limit."""
        buffered: list[Message] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return buffered
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                return None
            buffered.append(message)
            if not message.get("more_body", False):
                return buffered

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        problem = Problem(413, f"The request body is larger than {self.max_bytes} bytes.")
        await problem.response(scope.get("path")).__call__(scope, receive, send)
