"""A submit acknowledged only once a replica has it: ``WAIT`` after the submit script, on its connection.

``WAIT n ms`` waits for the writes of the connection that sends it, so the script and the WAIT go
in one pipeline (one connection, one round trip). A repeat of an idempotency key writes nothing
itself, and its answer must wait for the first request's write, made on another connection:
Redis 6.2 and 7.0 (checked) mark a connection with the primary's whole replication offset after
any command, but a server that marks it only after a write would let the repeat through, so a
PUBLISH (replicated like a write, heard by no one) goes between the script and the WAIT.

With no replica connected there is nothing to wait for and the primary answers alone: whether
replicas exist is read from ``INFO replication`` and kept for a few seconds, so a primary without
replicas pays one INFO every few seconds, not a WAIT per submit.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

if TYPE_CHECKING:
    from shared.scripts import ScriptCall


class ReplicaWait:
    """How many replicas a submit waits for (``replicas`` at most, as many as are connected)."""

    def __init__(
        self, redis: Redis, channel: str, *, replicas: int, timeout_ms: int, cache_s: float = 3.0
    ) -> None:
        self.redis = redis
        self.channel = channel
        self.replicas = replicas
        self.timeout_ms = timeout_ms
        self.cache_s = cache_s
        self._connected = 0
        self._read_at = -cache_s

    async def needed(self) -> int:
        """Replicas to wait for now: 0 when none are connected (or none are asked for)."""
        if self.replicas <= 0:
            return 0
        if time.monotonic() - self._read_at >= self.cache_s:
            info: dict[str, Any] = await self.redis.info("replication")
            self._connected = int(info.get("connected_slaves", 0))
            self._read_at = time.monotonic()
        return min(self.replicas, self._connected)

    def forget(self) -> None:
        """Read the replicas again on the next submit (a WAIT came back short: one may be gone)."""
        self._read_at = -self.cache_s

    async def call(self, script: ScriptCall, replicas: int) -> tuple[Any, int]:
        """Run a script and ``WAIT replicas timeout_ms`` on one connection: (its reply, replicas
        that acknowledged). A script Redis does not hold yet is loaded and sent again."""
        for _ in range(2):
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.evalsha(script.sha, len(script.keys), *script.keys, *script.args)
                pipe.publish(self.channel, b"")
                pipe.execute_command("WAIT", replicas, self.timeout_ms)
                reply, _, acked = await pipe.execute(raise_on_error=False)
            if not isinstance(reply, NoScriptError):
                break
            await self.redis.script_load(script.source)
        if isinstance(reply, Exception):
            raise reply
        if isinstance(acked, Exception):
            raise acked
        if int(acked) < replicas:
            self.forget()
        return reply, int(acked)
