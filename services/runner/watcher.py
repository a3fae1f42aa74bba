"""Cancellations of the runs this process executes, from one stream every runner reads.

The append script copies each cancel of a running run to ``tt:cancels`` in the same step as the
run stream (``shared.store``). A runner reads that one stream (``shared.multiplex``, so a close
or a new cursor never waits out a block) and hands the cancels of the runs it holds to
``on_cancel``. Watching each held run's stream instead would wake the reader on every event the
runner itself appends and make Redis scan every held stream per read: quadratic in the runs in
flight. Cancels are rare; this costs one read per cancel, whatever the number of runs.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis

from shared import streamids
from shared.events import RunCancelled
from shared.keys import Keys
from shared.multiplex import Entries, Multiplexer
from shared.store import EventStore

logger = logging.getLogger(__name__)

OnCancel = Callable[[str, RunCancelled], None]
RECENT = 10_000
"""Cancels remembered for a run not watched yet (its cancel came between its start and watch)."""


class CancelWatcher:
    """Calls ``on_cancel(run_id, event)`` when a watched run is cancelled."""

    def __init__(
        self, store: EventStore, reader: Redis, keys: Keys, runner_id: str, on_cancel: OnCancel
    ) -> None:
        self.store = store
        self.keys = keys
        self.on_cancel = on_cancel
        self.watched: set[str] = set()
        self.recent: OrderedDict[str, RunCancelled] = OrderedDict()
        self.streams = Multiplexer(reader, store.redis, keys.wakeup(runner_id), self._consume, count=100)

    async def open(self) -> None:
        """Read from the cancels stream's current end: call before the first run starts.

        Earlier cancels need no watching: a run cancelled before it started cannot start, and one
        cancelled before this process took it over has the cancel in its own stream.
        """
        last: Any = await self.store.redis.xrevrange(self.keys.cancels, count=1)
        head = streamids.ZERO if not last else _text(last[0][0])
        self.streams.add(self.keys.cancels, head)

    async def watch(self, run_id: str, after: str = "") -> None:
        """Watch a run from now on; a cancel already read for it is handed over at once."""
        self.watched.add(run_id)
        cancelled = self.recent.get(run_id)
        if cancelled is not None:
            self.on_cancel(run_id, cancelled)

    async def unwatch(self, run_id: str) -> None:
        self.watched.discard(run_id)

    async def run(self, block_ms: int = 10_000) -> None:
        """Read until cancelled; a Redis error is logged and the read retried."""
        self.streams.block_ms = block_ms
        await self.streams.run()

    def _consume(self, key: str, entries: Entries) -> None:
        for _, event in self.store.decode_entries(entries):
            if not isinstance(event, RunCancelled):
                continue
            self.recent[event.run_id] = event
            if len(self.recent) > RECENT:
                self.recent.popitem(last=False)
            if event.run_id in self.watched:
                self.on_cancel(event.run_id, event)

    async def close(self) -> None:
        await self.streams.close()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
