"""One blocking read over the run streams of every run this process executes: cancellations.

The read is ``shared.multiplex``: a run added to the set is watched at once instead of after the
current block times out.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from redis.asyncio import Redis

from shared.events import RunCancelled
from shared.keys import Keys
from shared.multiplex import Entries, Multiplexer
from shared.store import EventStore

logger = logging.getLogger(__name__)

OnCancel = Callable[[str, RunCancelled], None]


class CancelWatcher:
    """Calls ``on_cancel(run_id, event)`` when a watched run's stream gets a RunCancelled."""

    def __init__(
        self, store: EventStore, reader: Redis, keys: Keys, runner_id: str, on_cancel: OnCancel
    ) -> None:
        self.store = store
        self.keys = keys
        self.on_cancel = on_cancel
        self.streams = Multiplexer(reader, store.redis, keys.wakeup(runner_id), self._consume, count=100)

    async def watch(self, run_id: str, after: str) -> None:
        """Watch a run's stream for entries after ``after`` (never from ``$``)."""
        self.streams.add(self.keys.run(run_id), after or "0-0")
        await self.streams.wake()

    async def unwatch(self, run_id: str) -> None:
        key = self.keys.run(run_id)
        if key in self.streams:
            self.streams.discard(key)
            await self.streams.wake()

    async def run(self, block_ms: int = 10_000) -> None:
        """Read until cancelled; a Redis error is logged and the read retried."""
        self.streams.block_ms = block_ms
        await self.streams.run()

    def _consume(self, key: str, entries: Entries) -> None:
        run_id = self.keys.run_id_of(key)
        for _, event in self.store.decode_entries(entries):
            if isinstance(event, RunCancelled):
                self.on_cancel(run_id, event)

    async def close(self) -> None:
        await self.streams.close()
