"""Automatic pipelining of script calls: the calls made in one turn of the event loop share a round trip.

A gateway under load has dozens of requests awaiting Redis at once. Sent one by one, each pays for
a pool checkout, its own write and its own wake-up; here every call made while the event loop
runs its ready callbacks is queued, and one flush (scheduled with ``call_soon``, so after those
callbacks) sends the queue as one pipeline. A lone call pays one extra ``call_soon``; under load
the batch grows with the load, with no timer and no added wait. At most ``max_in_flight``
pipelines are in flight; calls made meanwhile go in the next one.

Every call keeps its own outcome: an error reply fails that call only; a connection failure
fails the calls of that flush (redis-py's retry may have re-sent the pipeline, so the scripts
sent this way must be safe to run twice, as the submit script is).
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import Redis

from shared.scripts import ScriptCall, evalsha_pipelined

Waiting = tuple[ScriptCall, "asyncio.Future[Any]"]


class ScriptBatcher:
    """``await batcher.call(call)``: the reply of one EVALSHA, sent in a pipeline with its neighbours."""

    def __init__(self, redis: Redis, *, max_batch: int = 256, max_in_flight: int = 2) -> None:
        self.redis = redis
        self.max_batch = max_batch
        self.max_in_flight = max_in_flight
        self.flushes = 0
        """Pipelines sent so far (calls / flushes is the mean batch)."""
        self.calls = 0
        self._waiting: list[Waiting] = []
        self._flushing: set[asyncio.Task[None]] = set()
        self._scheduled = False
        self._closed = False

    async def call(self, call: ScriptCall) -> Any:
        """The script's reply; an error reply raises as its exception."""
        if self._closed:
            raise RuntimeError("the script batcher is closed")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting.append((call, future))
        self._kick()
        return await future

    async def aclose(self) -> None:
        """Refuse new calls and wait for the ones already taken."""
        self._closed = True
        while self._waiting or self._flushing:
            self._kick()
            if self._flushing:
                await asyncio.wait(set(self._flushing))
            else:
                await asyncio.sleep(0)

    def _kick(self) -> None:
        if self._scheduled or not self._waiting or len(self._flushing) >= self.max_in_flight:
            return
        self._scheduled = True
        asyncio.get_running_loop().call_soon(self._start)

    def _start(self) -> None:
        self._scheduled = False
        batch, self._waiting = self._waiting[: self.max_batch], self._waiting[self.max_batch :]
        batch = [(call, future) for call, future in batch if not future.cancelled()]
        if batch:
            task = asyncio.create_task(self._flush(batch), name="script-batch")
            self._flushing.add(task)
            task.add_done_callback(self._flushed)
        self._kick()

    def _flushed(self, task: asyncio.Task[None]) -> None:
        self._flushing.discard(task)
        self._kick()

    async def _flush(self, batch: list[Waiting]) -> None:
        self.flushes += 1
        self.calls += len(batch)
        try:
            replies = await evalsha_pipelined(self.redis, [call for call, _ in batch])
        except BaseException as exc:  # the connection failed: every call of this flush fails
            cancelled = isinstance(exc, asyncio.CancelledError)
            for _, future in batch:
                if future.done():
                    continue
                if cancelled:
                    future.cancel()
                else:
                    future.set_exception(exc)
            if cancelled or not isinstance(exc, Exception):
                raise
            return
        for (_, future), reply in zip(batch, replies, strict=True):
            if future.done():  # its caller went away; the call ran all the same
                continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)
