"""Following a run live, resuming from the last event ID seen (kept on disk across restarts).

Two sources: the gateway's SSE stream (default) and the run's Redis stream read directly with
plain XREAD (``--redis``). Each event is shown and its ID saved inside a section that a Ctrl-C or
SIGTERM does not cut, so a restarted watcher neither repeats nor skips an event.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any, cast

import msgspec
from redis import Redis
from redis.exceptions import RedisError

from services.cli.api import Api, ApiError, GatewayDown, SseMessage, pick
from services.cli.cursors import Cursors
from services.cli.display import Display, is_terminal
from shared.events import AnyEvent, EventCodec, EventError
from shared.keys import EVENT_FIELD, Keys
from shared.reducer import apply
from shared.run_state import RunState, initial
from shared.statedelta import merge

Json = dict[str, Any]
RECONNECT_GIVE_UP_S = 120.0
RawEntry = tuple[bytes, dict[bytes, bytes]]


class Detached(Exception):
    """The user pressed Ctrl-C (or the process got SIGTERM): stop watching, leave the run alone."""


class SignalGuard:
    """Turns SIGINT/SIGTERM into ``Detached``, but never inside a ``section()``."""

    def __init__(self) -> None:
        self.in_section = False
        self.pending = False

    @contextmanager
    def installed(self) -> Iterator[SignalGuard]:
        previous = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    @contextmanager
    def section(self) -> Iterator[None]:
        self.in_section = True
        try:
            yield
        finally:
            self.in_section = False
        if self.pending:
            raise Detached

    def _handle(self, _signum: int, _frame: FrameType | None) -> None:
        if self.in_section:
            self.pending = True
            return
        raise Detached


class SseWatcher:
    """Follows a run over the gateway's SSE stream, reconnecting from the last ID on failure."""

    def __init__(self, api: Api, cursors: Cursors, display: Display, guard: SignalGuard) -> None:
        self.api, self.cursors, self.display, self.guard = api, cursors, display, guard
        self.state: Json = {}

    def follow(self, run_id: str) -> Json:
        """Watch until the run ends; the final state."""
        self.state = self.api.run(run_id)
        cursor = self.cursors.load(run_id)
        self.display.snapshot(self.state)
        if is_terminal(self.state) and pick(self.state, "last_event_id") in (cursor, None):
            return self.state
        failing_since: float | None = None
        while True:
            try:
                if self._stream(run_id):
                    return self.state
                failing_since = None
            except GatewayDown as exc:
                failing_since = failing_since or time.monotonic()
                if time.monotonic() - failing_since > RECONNECT_GIVE_UP_S:
                    raise
                self.display.note(f"connection lost ({exc}); reconnecting…")
                time.sleep(1.0)

    def _stream(self, run_id: str) -> bool:
        """Read until the stream closes; True once the run has ended."""
        for message in self.api.events(run_id, self.cursors.load(run_id)):
            if message.event == "end":
                return True
            self._apply(run_id, message)
        return is_terminal(self.state)

    def _apply(self, run_id: str, message: SseMessage) -> None:
        state, delta = message.data.get("state"), message.data.get("delta")
        if isinstance(state, dict):
            self.state = state
        elif isinstance(delta, dict) and message.id is not None:
            self.state = merge(self.state, delta, message.id)  # between full states, the changes
        if message.event == "reset" or message.id is None:
            self.display.snapshot(self.state, header=False)
            return
        with self.guard.section():
            self.display.event(message.id, message.event, self.state)
            self.cursors.save(run_id, message.id)


class RedisWatcher:
    """Follows a run by reading its Redis stream directly: XREAD BLOCK from the last ID."""

    def __init__(
        self, redis: Redis, keys: Keys, cursors: Cursors, display: Display, guard: SignalGuard
    ) -> None:
        self.redis, self.keys, self.cursors = redis, keys, cursors
        self.display, self.guard = display, guard
        self.codec = EventCodec()

    def follow(self, run_id: str) -> Json:
        stream = self.keys.run(run_id)
        if not self.redis.exists(stream):
            raise ApiError(f"no stream {stream} in Redis: unknown run, or it ended more than 48 h ago")
        cursor = self.cursors.load(run_id)
        state = self._replay(run_id, stream, cursor)
        if cursor is not None:
            self.display.snapshot(_builtins(state))
        last = cursor or "0"
        while not state.terminal:
            for entry_id, event in self._read(stream, last):
                state = apply(state, event, entry_id)
                last = entry_id
                with self.guard.section():
                    self.display.event(entry_id, type(event).__name__, _builtins(state))
                    self.cursors.save(run_id, entry_id)
                if state.terminal:  # a terminal event, or the cancel of a run never started
                    break
        return _builtins(state)

    def _replay(self, run_id: str, stream: str, cursor: str | None) -> RunState:
        """The state up to and including the cursor (all of the stream without one): not shown."""
        state = initial(run_id)
        if cursor is None:
            return state
        entries = cast(list[RawEntry], self.redis.xrange(stream, "-", cursor))
        for entry_id, fields in entries:
            event = self._decode(fields)
            if event is not None:
                state = apply(state, event, _text(entry_id))
        return state

    def _read(self, stream: str, last: str) -> Iterator[tuple[str, AnyEvent]]:
        try:
            raw = self.redis.xread({stream: last}, count=100, block=5000)
            reply = cast(list[tuple[bytes, list[RawEntry]]], raw)
        except RedisError as exc:
            raise ApiError(f"reading {stream} from Redis failed: {exc}") from exc
        for _key, entries in reply or []:
            for entry_id, fields in entries:
                event = self._decode(fields)
                if event is not None:
                    yield _text(entry_id), event

    def _decode(self, fields: dict[bytes, bytes]) -> AnyEvent | None:
        try:
            return self.codec.decode(fields[EVENT_FIELD.encode()])
        except (EventError, KeyError):
            return None  # an event type this build does not know: skip it, as every reader does


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _builtins(state: RunState) -> Json:
    doc: Json = msgspec.to_builtins(state)
    return doc
