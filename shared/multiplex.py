"""One blocking XREAD over many streams, interrupted at once through a per-process wake-up stream.

A process that follows many streams (the gateway's SSE hub, the runner's cancel watcher) keeps
one connection blocked on one XREAD. When the set of streams changes, waiting for the block to
time out would leave a new stream unread for seconds, so every XREAD also reads the process's
own wake-up stream, and ``wake()`` appends to it. Streams are always read from an explicit ID
(never ``$``), so nothing appended before the first read is missed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis

logger = logging.getLogger(__name__)

Fields = dict[Any, Any]
Entries = list[tuple[str, Fields]]
OnEntries = Callable[[str, Entries], None]
"""Called with a stream's key and its new entries (IDs as text), in stream order."""

WAKE_MAXLEN = 100
WAKE_TTL_S = 24 * 3600
"""The wake-up stream of a process that died expires on its own."""
RETRY_S = 0.5


class Multiplexer:
    """Reads every added stream after its cursor; ``run()`` hands new entries to ``on_entries``."""

    def __init__(
        self,
        reader: Redis,
        commands: Redis,
        wake_key: str,
        on_entries: OnEntries,
        *,
        block_ms: int = 5000,
        count: int = 500,
    ) -> None:
        """``reader`` must have no socket timeout shorter than ``block_ms`` (a blocking client)."""
        self.reader, self.commands = reader, commands
        self.wake_key = wake_key
        self.on_entries = on_entries
        self.block_ms, self.count = block_ms, count
        self.rounds = 0
        self._cursors: dict[str, str] = {}
        self._wake_cursor = "0-0"

    def __contains__(self, key: str) -> bool:
        return key in self._cursors

    def add(self, key: str, after: str) -> None:
        """Follow ``key`` from after ``after``; call ``wake()`` for it to be read at once."""
        self._cursors[key] = after

    def discard(self, key: str) -> None:
        """Stop following ``key`` (from the next round; entries of the current one are dropped)."""
        self._cursors.pop(key, None)

    async def wake(self, why: str = "1") -> None:
        """End the current blocking read, so the next one covers the streams as they are now."""
        async with self.commands.pipeline(transaction=False) as pipe:  # one round trip
            pipe.xadd(self.wake_key, {"w": why}, maxlen=WAKE_MAXLEN, approximate=True)
            pipe.expire(self.wake_key, WAKE_TTL_S)
            await pipe.execute()

    async def close(self) -> None:
        await self.commands.delete(self.wake_key)

    async def run(self) -> None:
        """Read until cancelled; a failed round is logged and tried again."""
        while True:
            try:
                await self.read_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("multiplexed read of %s failed; retrying", self.wake_key)
                await asyncio.sleep(RETRY_S)

    async def read_once(self) -> None:
        """One XREAD over the wake-up stream and every followed stream."""
        sent = dict(self._cursors)
        streams: dict[Any, Any] = {self.wake_key: self._wake_cursor, **sent}
        reply: Any = await self.reader.xread(streams, count=self.count, block=self.block_ms)
        self.rounds += 1
        for raw_key, raw_entries in reply or ():
            key = _text(raw_key)
            entries = [(_text(entry_id), fields) for entry_id, fields in raw_entries]
            if not entries:
                continue
            if key == self.wake_key:
                self._wake_cursor = entries[-1][0]
            elif key in sent and self._cursors.get(key) == sent[key]:
                # Unchanged while the read blocked: a stream discarded, or re-added from another
                # ID, meanwhile is read again from its new cursor by the next round instead.
                self._cursors[key] = entries[-1][0]
                self.on_entries(key, entries)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
