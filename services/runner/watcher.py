"""One blocking read over the run streams of every run this process executes: cancellations.

A per-process wake-up stream is part of every read, so a run added to the set is watched at once
instead of after the current block times out.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis

from shared.events import RunCancelled
from shared.keys import Keys
from shared.store import EventStore

logger = logging.getLogger(__name__)

OnCancel = Callable[[str, RunCancelled], None]
_WAKE_TTL_S = 24 * 3600


class CancelWatcher:
    """Calls ``on_cancel(run_id, event)`` when a watched run's stream gets a RunCancelled."""

    def __init__(
        self, store: EventStore, reader: Redis, keys: Keys, runner_id: str, on_cancel: OnCancel
    ) -> None:
        self.store = store
        self.reader = reader
        self.keys = keys
        self.wake_key = keys.wakeup(runner_id)
        self.on_cancel = on_cancel
        self._runs: dict[str, str] = {}
        self._wake_last = "0"

    async def watch(self, run_id: str, after: str) -> None:
        """Watch a run's stream for entries after ``after`` (never from ``$``)."""
        self._runs[run_id] = after
        await self._wake()

    async def unwatch(self, run_id: str) -> None:
        if self._runs.pop(run_id, None) is not None:
            await self._wake()

    async def _wake(self) -> None:
        async with self.store.redis.pipeline(transaction=False) as pipe:
            pipe.xadd(self.wake_key, {"w": "1"}, maxlen=16, approximate=False)
            pipe.expire(self.wake_key, _WAKE_TTL_S)
            await pipe.execute()

    async def run(self, block_ms: int = 10_000) -> None:
        """Read until cancelled; a Redis error is logged and the read retried."""
        while True:
            try:
                await self._read_once(block_ms)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("cancel watcher read failed; retrying")
                await asyncio.sleep(0.5)

    async def _read_once(self, block_ms: int) -> None:
        streams = {self.wake_key: self._wake_last, **{self.keys.run(r): a for r, a in self._runs.items()}}
        reply: Any = await self.reader.xread(streams, count=100, block=block_ms)  # type: ignore[arg-type]
        for key, entries in reply or ():
            if not entries:
                continue
            name = key.decode() if isinstance(key, bytes) else key
            last = entries[-1][0]
            last_id = last.decode() if isinstance(last, bytes) else last
            if name == self.wake_key:
                self._wake_last = last_id
                continue
            self._consume(self.keys.run_id_of(name), last_id, entries)

    def _consume(self, run_id: str, last_id: str, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> None:
        if run_id not in self._runs:
            return
        self._runs[run_id] = last_id
        for _, event in self.store.decode_entries(entries):
            if isinstance(event, RunCancelled):
                self.on_cancel(run_id, event)

    async def close(self) -> None:
        await self.store.redis.delete(self.wake_key)
