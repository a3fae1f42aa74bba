"""The SSE multiplexer: one reader per process, one blocking XREAD over every watched run.

Each watched run keeps its fold and the frames already produced (a run is tens of events), so a
listener joining late is served its replay from memory, and every frame is encoded once per
event however many clients watch: the same bytes object goes into every client's queue. A frame
carries the event's type and step and the changes to the run's state (``shared.statedelta``); a
client's first event and the run's first carry the full state instead (also encoded once, for all
the clients that need it). A listener has a bounded queue; one that cannot keep up is dropped
(and counted) — it resumes from its last ID like any reconnecting client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from redis.asyncio import Redis

from services.gateway.frames import (
    CUT,
    HANGUP,
    HEARTBEAT,
    NO_ID,
    Batch,
    Frame,
    Source,
    end_frame,
    event_frame,
)
from shared.events import AnyEvent
from shared.keys import Keys
from shared.multiplex import Entries, Multiplexer
from shared.reducer import apply
from shared.run_state import RunState, initial
from shared.store import EventStore
from shared.streamids import parse as parse_id

logger = logging.getLogger(__name__)

Json = dict[str, Any]


class Sink(Protocol):
    """What the hub fans frames out to."""

    run_id: str
    dropped: bool

    def offer(self, frame: Frame) -> bool:
        """Take ``frame`` (or skip it if at or before the position); False when too far behind."""

    def replay(self, frames: Batch) -> bool:
        """Take several frames at once (a replay, or frames read together); False when too far behind."""

    def cut(self) -> None:
        """Dropped for being too slow: end the stream (the client resumes from its last ID)."""


class Listener:
    """One client's view of a run: its position and a bounded queue of frames.

    The queue is a list and one waiter, not an ``asyncio.Queue``: a frame for each of a
    thousand clients is a put and a wake-up each, and the lighter pair is measurably cheaper
    (docs/benchmarks.md, "SSE through public APIs"). A list, not a deque: an empty deque is
    ~600 bytes (its first block), an empty list 56, and a waiting client's queue is empty; the
    client drains it whole, so nothing is popped from its front.
    """

    # Slots: the hub touches a thousand of these per frame; no per-instance dict to fetch too.
    __slots__ = ("_waiter", "after", "dropped", "frames", "maxsize", "primed", "run_id")

    def __init__(self, run_id: str, after: str, maxsize: int) -> None:
        self.run_id = run_id
        self.after = parse_id(after)
        self.frames: list[Frame] = []
        self.maxsize = maxsize
        self._waiter: asyncio.Future[None] | None = None
        self.dropped = False
        self.primed = False
        """Whether an event frame (so a full state) has been queued yet."""

    def offer(self, frame: Frame) -> bool:
        if self.dropped:
            return False
        if frame.key <= self.after:
            return True
        if not self.primed and frame.key != NO_ID:
            frame, self.primed = frame.opening(), True
        if len(self.frames) >= self.maxsize:
            return False
        self._put(frame)
        return True

    def replay(self, frames: Batch) -> bool:
        """The frames after the position as one queued frame: a batch takes one place in the
        queue (its bound is for frames the client has not read in time, not for a backlog)."""
        if self.primed and frames and frames[0].key > self.after:
            return self.offer(frames.joined())  # all of it is new: the bytes shared by all
        fresh = [f for f in frames if f.key > self.after]
        if not fresh:
            return not self.dropped
        if not self.primed and fresh[0].key != NO_ID:
            fresh[0], self.primed = fresh[0].opening(), True
        return self.offer(Batch(fresh).joined())

    async def drain(self) -> tuple[bytes, bool]:
        """Everything queued as one write, waiting for a frame if none is; True: it ends the stream."""
        frames = self.frames
        while not frames:
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        if len(frames) == 1:
            frame = frames.pop()
            return frame.data, frame.final
        parts = []
        for frame in frames:
            parts.append(frame.data)
            if frame.final:
                break  # nothing after the end is sent: the stream closes with it
        del frames[: len(parts)]
        return b"".join(parts), frame.final

    def cut(self) -> None:
        """Dropped for being too slow: the queue ends with the cut notice instead."""
        self.dropped = True
        self._end_with(CUT)

    def hang_up(self) -> None:
        """The client went away: whoever waits on the queue wakes and ends."""
        self._end_with(HANGUP)

    def _end_with(self, frame: Frame) -> None:
        self.frames.clear()
        self._put(frame)

    def _put(self, frame: Frame) -> None:
        self.frames.append(frame)
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


@dataclass(slots=True, eq=False)
class Watch:
    run_id: str
    key: str
    state: RunState | None = None
    view: Json | None = None
    """``state_view(state)``: what the next frame's delta is taken from."""
    frames: list[Frame] = field(default_factory=list)
    events: list[tuple[str, AnyEvent]] = field(default_factory=list)
    """What a delta frame's ``opening()`` folds again (msgspec structs: a fraction of the views)."""
    listeners: dict[Sink, None] = field(default_factory=dict)
    """In join order (a dict as an ordered set): frames go out first come, first served."""
    end: Frame | None = None
    sent_at: float = 0.0
    """``time.monotonic()`` of the last frame (heartbeats included) sent to every listener."""


class Hub:
    """Owns the reader task; ``join``/``leave`` register listeners."""

    def __init__(
        self,
        reader: Redis,
        commands: Redis,
        store: EventStore,
        keys: Keys,
        process_id: str,
        *,
        block_ms: int = 5000,
        heartbeat_s: float = 15.0,
        on_drop: Callable[[], None] = lambda: None,
    ) -> None:
        self.store, self.keys = store, keys
        self.streams = Multiplexer(
            reader, commands, keys.wakeup(process_id), self._on_entries, block_ms=block_ms
        )
        self.heartbeat_s = heartbeat_s
        self.on_drop = on_drop
        self.dropped = 0
        self._watches: dict[str, Watch] = {}
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def listeners(self) -> int:
        return sum(len(w.listeners) for w in self._watches.values())

    @property
    def rounds(self) -> int:
        return self.streams.rounds

    async def start(self) -> None:
        """Start the reader and the heartbeat; Redis need not be up yet (the wake-up stream is new)."""
        self._tasks = [
            asyncio.create_task(self.streams.run(), name="sse-hub"),
            asyncio.create_task(self._beat(), name="sse-heartbeat"),
        ]

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(Exception):
            await self.streams.close()

    def owner(self, run_id: str) -> str:
        """The owner of a run this process follows from its first event ('' otherwise).

        '' also while the reader has read nothing of the run yet, or when the stream it read had
        been trimmed (no RunRequested first): the caller then checks in Redis, and sends a reset
        to a client whose position is gone, never a silent gap. (Bursts of such checks share one
        lookup, see ``flight.SingleFlight``.)
        """
        watch = self._watches.get(run_id)
        if watch is None or not watch.frames or watch.frames[0].kind != "RunRequested":
            return ""
        return watch.state.user_id if watch.state is not None else ""

    async def join(self, run_id: str, after: str, maxsize: int) -> Listener:
        """Register a listener for frames after ``after``; the replay is queued at once."""
        listener = Listener(run_id, after, maxsize)
        await self.attach(listener)
        return listener

    async def attach(self, listener: Sink) -> None:
        """Register any sink; its replay (frames already read, and the end) is handed over at once."""
        run_id = listener.run_id
        watch = self._watches.get(run_id)
        fresh = watch is None
        if watch is None:
            watch = self._watches[run_id] = Watch(run_id, self.keys.run(run_id))
            self.streams.add(watch.key, "0-0")
        watch.listeners[listener] = None
        if not listener.replay(Batch([*watch.frames, *([watch.end] if watch.end else [])])):
            self._drop(watch, listener)
        if fresh:
            await self.streams.wake("join")

    def leave(self, listener: Sink) -> None:
        watch = self._watches.get(listener.run_id)
        if watch is None:
            return
        watch.listeners.pop(listener, None)
        if not watch.listeners:
            del self._watches[listener.run_id]
            self.streams.discard(watch.key)

    async def _beat(self) -> None:
        """One timer for every client: a heartbeat comment to each run silent for a while.

        Checked four times a ``heartbeat_s``; a run with no frame for 3/4 of it gets one, so no
        client goes longer than ``heartbeat_s`` without bytes, and a busy run's clients get none.
        """
        while True:
            await asyncio.sleep(self.heartbeat_s / 4)
            quiet_since = time.monotonic() - self.heartbeat_s * 3 / 4
            for watch in list(self._watches.values()):
                if watch.sent_at <= quiet_since:
                    self._broadcast(watch, HEARTBEAT)

    def _on_entries(self, key: str, entries: Entries) -> None:
        watch = self._watches.get(self.keys.run_id_of(key))
        if watch is None or watch.key != key:
            return
        batch = Batch()
        for entry_id, fields in entries:
            event = self.store.decode_fields(entry_id, fields)
            if event is not None:
                batch.extend(self._fold(watch, entry_id, event))
            if watch.end is not None:
                self.streams.discard(key)
                break
        if len(batch) == 1:
            self._broadcast(watch, batch[0])
        elif batch:
            self._broadcast_batch(watch, batch)

    def _fold(self, watch: Watch, entry_id: str, event: AnyEvent) -> list[Frame]:
        """The event's frame (and the end, after a terminal event), kept for later listeners."""
        watch.state = apply(watch.state or initial(watch.run_id), event, entry_id)
        watch.events.append((entry_id, event))
        source = Source(watch.run_id, watch.events, len(watch.events))
        frame, watch.view = event_frame(entry_id, event, watch.view, watch.state, source)
        watch.frames.append(frame)
        # The fold decides, not the event type: RunCancelled ends a run that never started (the
        # append script marks it ended; no runner will confirm it), but not a running one.
        if not watch.state.terminal:
            return [frame]
        watch.end = end_frame(watch.state)
        return [frame, watch.end]

    def _broadcast(self, watch: Watch, frame: Frame) -> None:
        watch.sent_at = time.monotonic()
        for listener in list(watch.listeners):
            if not listener.offer(frame):
                self._drop(watch, listener)

    def _broadcast_batch(self, watch: Watch, batch: Batch) -> None:
        """Frames read together go to each listener as one queued frame (see ``Listener.replay``)."""
        watch.sent_at = time.monotonic()
        for listener in list(watch.listeners):
            if not listener.replay(batch):
                self._drop(watch, listener)

    def _drop(self, watch: Watch, listener: Sink) -> None:
        listener.cut()
        watch.listeners.pop(listener, None)
        self.dropped += 1
        self.on_drop()
        logger.info("dropped a slow SSE client of run %s (it can resume)", watch.run_id)
