"""SSE frames: an event encoded once as the bytes every client of its run receives.

A frame carries the event's type and step and the change to the run's state
(``shared.statedelta``); the run's first event, and a client's first whatever it is, carry the
full state instead (``Frame.opening``, encoded once for all the clients that need it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from services.gateway.schemas import state_view
from shared.events import AnyEvent
from shared.reducer import apply
from shared.run_state import RunState, initial
from shared.statedelta import delta
from shared.streamids import parse as parse_id

_encoder = msgspec.json.Encoder()
Json = dict[str, Any]


NO_ID = (1 << 62, 0)
"""The sort key of a frame without an ID (end, heartbeat): after every position, so always sent."""


@dataclass(slots=True, eq=False)
class Frame:
    """One encoded SSE message, built once per event and shared by every client of the run.

    ``key`` is the parsed ID; ``end``, heartbeat and cut frames carry none. A frame whose data
    is a delta can rebuild itself with the full state for ``opening()`` from ``source``: the run's
    events so far and this event's place among them. Not the views themselves: a run's state
    view per frame is ~15 times the frames' bytes, and a gateway follows thousands of runs.
    """

    id: str
    kind: str
    data: bytes
    final: bool = False
    key: tuple[int, int] = NO_ID
    source: Source | None = None
    _opening: Frame | None = None

    def opening(self) -> Frame:
        """This frame as a client's first: with the full state (encoded on first need, once).

        Only a client resuming mid-run needs it; the state is folded again up to this event.
        """
        if self.source is None:
            return self
        if self._opening is None:
            event, state = self.source.views()
            self._opening = frame_of(self.id, self.kind, {"event": event, "state": state})
        return self._opening


@dataclass(frozen=True, slots=True)
class Source:
    """Where a delta frame's full views can be folded again from: the run's events, and how many."""

    run_id: str
    events: list[tuple[str, AnyEvent]]
    """The watched run's events, appended to as they arrive (shared by all its frames)."""
    count: int

    def views(self) -> tuple[Json, Json]:
        state = initial(self.run_id)
        for entry_id, event in self.events[: self.count]:
            state = apply(state, event, entry_id)
        return stream_event(self.events[self.count - 1][1]), state_view(state)


def make_frame(entry_id: str, kind: str, data: bytes, final: bool = False) -> Frame:
    return Frame(entry_id, kind, data, final, parse_id(entry_id) if entry_id else NO_ID)


def frame_of(entry_id: str, kind: str, payload: Any) -> Frame:
    return make_frame(entry_id, kind, sse_frame(kind, payload, entry_id))


STREAMED_FIELDS = (("step", "step"), ("share_id", "shareId"))
"""Event fields a stream carries beside the type: what the event is about (a step; a share link,
whose revocation ends a shared stream). The rest is in the frame's state or delta."""


def stream_event(event: AnyEvent) -> Json:
    """An event as a stream carries it: ``{"type": …, "step": …}`` for a step's event."""
    doc: Json = {"type": type(event).__name__}
    for name, key in STREAMED_FIELDS:
        value = getattr(event, name, None)
        if value is not None:
            doc[key] = value
    return doc


def event_frame(
    entry_id: str, event: AnyEvent, before: Json | None, state: RunState, source: Source
) -> tuple[Frame, Json]:
    """The frame of ``event`` and the state view after it: the full state for a run's first event
    (no ``before``), a delta from ``before`` otherwise. The terminal event's delta holds the
    result and whatever else changed; a client's first frame is always whole (``opening``, folded
    again from ``source``)."""
    kind, event_doc, view = type(event).__name__, stream_event(event), state_view(state)
    change = None if before is None else delta(before, view)
    if change is None:
        return frame_of(entry_id, kind, {"event": event_doc, "state": view}), view
    frame = frame_of(entry_id, kind, {"event": event_doc, "delta": change})
    frame.source = source
    return frame, view


def sse_frame(kind: str, payload: Any, event_id: str = "") -> bytes:
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {kind}\ndata: ".encode() + _encoder.encode(payload) + b"\n\n"


def end_frame(state: RunState) -> Frame:
    body = {"runId": state.run_id, "status": state.status, "lastEventId": state.last_event_id}
    return make_frame("", "end", sse_frame("end", body), final=True)


class Batch(list[Frame]):
    """Frames handed over together; ``joined()`` is them as one frame, built once."""

    _joined: Frame | None = None

    def joined(self) -> Frame:
        if self._joined is None:
            last = self[-1]
            self._joined = Frame(last.id, "batch", b"".join(f.data for f in self), last.final, last.key)
        return self._joined


HEARTBEAT = make_frame("", "heartbeat", b": heartbeat\n\n")
CUT = make_frame("", "cut", b": you fell behind; reconnect with Last-Event-ID to resume\n\n", final=True)
HANGUP = make_frame("", "hangup", b"", final=True)
"""Queued for a listener whose client went away: its reader wakes and ends."""
