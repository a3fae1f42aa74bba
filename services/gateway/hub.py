"""The SSE multiplexer: one reader task per process, one blocking XREAD over every watched run.

Each watched run keeps its fold and the frames already produced (a run is tens of events), so a
listener joining late is served its replay from memory and every frame (event + state snapshot)
is encoded once, however many clients watch. A listener has a bounded queue; one that cannot
keep up is dropped (and counted) — it resumes from its last ID like any reconnecting client.
A per-process wake-up stream is part of every XREAD, so a new run is read at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec
from redis.asyncio import Redis

from services.gateway.schemas import event_view, state_view
from shared import streamids
from shared.events import AnyEvent
from shared.keys import Keys
from shared.reducer import RunState, apply, initial
from shared.store import EventStore

logger = logging.getLogger(__name__)

_encoder = msgspec.json.Encoder()
WAKE_MAXLEN = 100
WAKE_TTL_S = 3600


parse_id = streamids.parse
is_stream_id = streamids.is_valid


NO_ID = (1 << 62, 0)
"""The sort key of a frame without an ID (end, heartbeat): after every position, so always sent."""


@dataclass(frozen=True, slots=True)
class Frame:
    """One encoded SSE message, built once per event and shared by every client of the run.

    ``chunk`` is the same bytes framed as one HTTP/1.1 chunk, for listeners that write straight
    to their connection; ``key`` is the parsed ID. ``end``, heartbeat and cut frames carry no ID.
    """

    id: str
    kind: str
    data: bytes
    final: bool = False
    key: tuple[int, int] = NO_ID
    chunk: bytes = b""


def make_frame(entry_id: str, kind: str, data: bytes, final: bool = False) -> Frame:
    key = parse_id(entry_id) if entry_id else NO_ID
    return Frame(entry_id, kind, data, final, key, b"%x\r\n%b\r\n" % (len(data), data))


def frame_of(entry_id: str, kind: str, payload: Any) -> Frame:
    return make_frame(entry_id, kind, sse_frame(kind, payload, entry_id))


def sse_frame(kind: str, payload: Any, event_id: str = "") -> bytes:
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {kind}\ndata: ".encode() + _encoder.encode(payload) + b"\n\n"


def end_frame(state: RunState) -> Frame:
    body = {"runId": state.run_id, "status": state.status, "lastEventId": state.last_event_id}
    return make_frame("", "end", sse_frame("end", body), final=True)


HEARTBEAT = make_frame("", "heartbeat", b": heartbeat\n\n")
CUT = make_frame("", "cut", b": you fell behind; reconnect with Last-Event-ID to resume\n\n", final=True)


class Sink(Protocol):
    """What the hub fans frames out to: a queued listener, or one that writes to its socket."""

    run_id: str
    dropped: bool

    def offer(self, frame: Frame) -> bool:
        """Take ``frame`` (or skip it if at or before the position); False when too far behind."""

    def replay(self, frames: list[Frame]) -> bool:
        """Take the run's frames so far, at once; False when too far behind."""

    def cut(self) -> None:
        """Dropped for being too slow: end the stream (the client resumes from its last ID)."""


class Listener:
    """One client's view of a run: its position and a bounded queue of frames."""

    def __init__(self, run_id: str, after: str, maxsize: int) -> None:
        self.run_id = run_id
        self.after = parse_id(after)
        self.queue: asyncio.Queue[Frame] = asyncio.Queue(maxsize)
        self.dropped = False

    def offer(self, frame: Frame) -> bool:
        if self.dropped:
            return False
        if frame.key <= self.after:
            return True
        try:
            self.queue.put_nowait(frame)
        except asyncio.QueueFull:
            return False
        return True

    def replay(self, frames: list[Frame]) -> bool:
        return all(self.offer(frame) for frame in frames)

    def cut(self) -> None:
        """Empty the queue and leave one final frame, so a reader waiting on it wakes and ends."""
        self.dropped = True
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(CUT)


@dataclass(slots=True, eq=False)
class Watch:
    run_id: str
    key: str
    cursor: str = "0-0"
    state: RunState | None = None
    frames: list[Frame] = field(default_factory=list)
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
        self.reader, self.commands, self.store, self.keys = reader, commands, store, keys
        self.wake_key = keys.wakeup(process_id)
        self.block_ms = block_ms
        self.heartbeat_s = heartbeat_s
        self.on_drop = on_drop
        self.dropped = 0
        self.rounds = 0
        self._watches: dict[str, Watch] = {}
        self._wake_cursor = "0-0"
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def listeners(self) -> int:
        return sum(len(w.listeners) for w in self._watches.values())

    async def start(self) -> None:
        """Start the reader and the heartbeat; Redis need not be up yet (the wake-up stream is new)."""
        self._tasks = [
            asyncio.create_task(self._loop(), name="sse-hub"),
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
            await self.commands.delete(self.wake_key)

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
        watch.listeners[listener] = None
        if not listener.replay([*watch.frames, *([watch.end] if watch.end else [])]):
            self._drop(watch, listener)
        if fresh:
            await self._wake("join")

    def leave(self, listener: Sink) -> None:
        watch = self._watches.get(listener.run_id)
        if watch is None:
            return
        watch.listeners.pop(listener, None)
        if not watch.listeners:
            del self._watches[listener.run_id]

    async def _wake(self, why: str) -> None:
        async with self.commands.pipeline(transaction=False) as pipe:  # one round trip
            pipe.xadd(self.wake_key, {"w": why}, maxlen=WAKE_MAXLEN, approximate=True)
            pipe.expire(self.wake_key, WAKE_TTL_S)
            await pipe.execute()

    async def _beat(self) -> None:
        """One timer for every client: a heartbeat comment to each run silent for a while.

        Checked four times a ``heartbeat_s``; a run with no frame for 3/4 of it gets one, so no
        client goes longer than ``heartbeat_s`` without bytes, and a busy run's clients get none
        (at 1000 clients a heartbeat costs the gateway as much as an event).
        """
        while True:
            await asyncio.sleep(self.heartbeat_s / 4)
            quiet_since = time.monotonic() - self.heartbeat_s * 3 / 4
            for watch in list(self._watches.values()):
                if watch.sent_at <= quiet_since:
                    self._broadcast(watch, HEARTBEAT)

    async def _loop(self) -> None:
        while True:
            try:
                await self._round()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("SSE reader round failed; retrying")
                await asyncio.sleep(0.5)

    async def _round(self) -> None:
        reading = {w.key: w for w in self._watches.values() if w.end is None}
        streams: dict[Any, Any] = {self.wake_key: self._wake_cursor}
        streams.update({key: w.cursor for key, w in reading.items()})
        reply: Any = await self.reader.xread(streams, count=500, block=self.block_ms)
        self.rounds += 1
        for raw_key, entries in reply or ():
            key = raw_key.decode() if isinstance(raw_key, bytes) else str(raw_key)
            if key == self.wake_key:
                self._wake_cursor = _text(entries[-1][0]) if entries else self._wake_cursor
                continue
            watch = reading.get(key)
            if watch is not None and self._watches.get(watch.run_id) is watch:
                self._feed(watch, entries)

    def _feed(self, watch: Watch, entries: list[Any]) -> None:
        for raw_id, fields in entries:
            entry_id = _text(raw_id)
            watch.cursor = entry_id
            event = self.store.decode_fields(entry_id, fields)
            if event is not None:
                self._dispatch(watch, entry_id, event)
            if watch.end is not None:
                return

    def _dispatch(self, watch: Watch, entry_id: str, event: AnyEvent) -> None:
        watch.state = apply(watch.state or initial(watch.run_id), event, entry_id)
        payload = {"event": event_view(event), "state": state_view(watch.state)}
        frame = frame_of(entry_id, type(event).__name__, payload)
        watch.frames.append(frame)
        self._broadcast(watch, frame)
        # The fold decides, not the event type: RunCancelled ends a run that never started (the
        # append script marks it ended; no runner will confirm it), but not a running one.
        if watch.state.terminal:
            watch.end = end_frame(watch.state)
            self._broadcast(watch, watch.end)

    def _broadcast(self, watch: Watch, frame: Frame) -> None:
        watch.sent_at = time.monotonic()
        for listener in list(watch.listeners):
            if not listener.offer(frame):
                self._drop(watch, listener)

    def _drop(self, watch: Watch, listener: Sink) -> None:
        listener.cut()
        watch.listeners.pop(listener, None)
        self.dropped += 1
        self.on_drop()
        logger.info("dropped a slow SSE client of run %s (it can resume)", watch.run_id)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
