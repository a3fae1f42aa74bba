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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
from redis.asyncio import Redis

from services.gateway.schemas import event_view, state_view
from shared.events import AnyEvent, is_terminal
from shared.keys import Keys
from shared.reducer import RunState, apply, initial
from shared.store import EventStore

logger = logging.getLogger(__name__)

_encoder = msgspec.json.Encoder()
WAKE_MAXLEN = 100
WAKE_TTL_S = 3600


def parse_id(value: str) -> tuple[int, int]:
    """A stream ID as a comparable pair; ``0`` and ``0-0`` are the start."""
    ms, _, seq = value.partition("-")
    return int(ms), int(seq or 0)


def is_stream_id(value: str) -> bool:
    try:
        ms, seq = parse_id(value)
    except ValueError:
        return False
    return ms >= 0 and seq >= 0 and value.count("-") <= 1 and len(value) <= 41


@dataclass(frozen=True, slots=True)
class Frame:
    """One encoded SSE message; ``end`` frames carry no ID."""

    id: str
    kind: str
    data: bytes
    final: bool = False


def sse_frame(kind: str, payload: Any, event_id: str = "") -> bytes:
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {kind}\ndata: ".encode() + _encoder.encode(payload) + b"\n\n"


def end_frame(state: RunState) -> Frame:
    body = {"runId": state.run_id, "status": state.status, "lastEventId": state.last_event_id}
    return Frame("", "end", sse_frame("end", body), final=True)


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
        if frame.id and parse_id(frame.id) <= self.after:
            return True
        try:
            self.queue.put_nowait(frame)
        except asyncio.QueueFull:
            self.dropped = True
            return False
        return True


@dataclass(slots=True, eq=False)
class Watch:
    run_id: str
    key: str
    cursor: str = "0-0"
    state: RunState | None = None
    frames: list[Frame] = field(default_factory=list)
    listeners: set[Listener] = field(default_factory=set)
    end: Frame | None = None


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
        on_drop: Callable[[], None] = lambda: None,
    ) -> None:
        self.reader, self.commands, self.store, self.keys = reader, commands, store, keys
        self.wake_key = keys.wakeup(process_id)
        self.block_ms = block_ms
        self.on_drop = on_drop
        self.dropped = 0
        self.rounds = 0
        self._watches: dict[str, Watch] = {}
        self._wake_cursor = "0-0"
        self._task: asyncio.Task[None] | None = None

    @property
    def listeners(self) -> int:
        return sum(len(w.listeners) for w in self._watches.values())

    async def start(self) -> None:
        """Start the reader; Redis need not be up yet (the wake-up stream is new per process)."""
        self._task = asyncio.create_task(self._loop(), name="sse-hub")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(Exception):
            await self.commands.delete(self.wake_key)

    def owner(self, run_id: str) -> str:
        """The owner of a run this process already follows from its start ('' if not known here)."""
        watch = self._watches.get(run_id)
        return watch.state.user_id if watch is not None and watch.state is not None else ""

    async def join(self, run_id: str, after: str, maxsize: int) -> Listener:
        """Register a listener for frames after ``after``; the replay is queued at once."""
        listener = Listener(run_id, after, maxsize)
        watch = self._watches.get(run_id)
        fresh = watch is None
        if watch is None:
            watch = self._watches[run_id] = Watch(run_id, self.keys.run(run_id))
        watch.listeners.add(listener)
        for frame in [*watch.frames, *([watch.end] if watch.end else [])]:
            if not listener.offer(frame):
                self._drop(watch, listener)
                break
        if fresh:
            await self._wake("join")
        return listener

    def leave(self, listener: Listener) -> None:
        watch = self._watches.get(listener.run_id)
        if watch is None:
            return
        watch.listeners.discard(listener)
        if not watch.listeners:
            del self._watches[listener.run_id]

    async def _wake(self, why: str) -> str:
        entry_id = await self.commands.xadd(self.wake_key, {"w": why}, maxlen=WAKE_MAXLEN, approximate=True)
        await self.commands.expire(self.wake_key, WAKE_TTL_S)
        return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)

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
        frame = Frame(entry_id, type(event).__name__, sse_frame(type(event).__name__, payload, entry_id))
        watch.frames.append(frame)
        self._broadcast(watch, frame)
        if is_terminal(event):
            watch.end = end_frame(watch.state)
            self._broadcast(watch, watch.end)

    def _broadcast(self, watch: Watch, frame: Frame) -> None:
        for listener in list(watch.listeners):
            if not listener.offer(frame):
                self._drop(watch, listener)

    def _drop(self, watch: Watch, listener: Listener) -> None:
        listener.dropped = True
        watch.listeners.discard(listener)
        self.dropped += 1
        self.on_drop()
        logger.info("dropped a slow SSE client of run %s (it can resume)", watch.run_id)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
