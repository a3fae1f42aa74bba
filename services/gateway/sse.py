"""The SSE endpoint: exact resume from a stream ID, live frames from the hub, a clear end."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from fastapi.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from services.gateway.auth import Caller
from services.gateway.frames import end_frame, sse_frame
from services.gateway.hub import Listener
from services.gateway.metrics import metrics
from services.gateway.problems import invalid, not_found
from services.gateway.runtime import Runtime
from services.gateway.schemas import state_view
from shared.events import RunRequested
from shared.ids import is_run_id
from shared.run_state import RunState
from shared.streamids import is_valid as is_stream_id
from shared.streamids import parse as parse_id

logger = logging.getLogger(__name__)

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "Connection": "keep-alive"}


def _resume_point(after: str | None, last_event_id: str | None) -> str:
    # A reconnecting EventSource repeats the URL (with its ?after=) and adds Last-Event-ID: the
    # header is the newer position.
    for name, value in (("Last-Event-ID", last_event_id), ("after", after)):
        if value is not None and value.strip():
            if not is_stream_id(value.strip()):
                raise invalid(name, f"{value!r} is not a stream ID such as 1718000000000-0 (or 0)")
            return value.strip()
    return "0-0"


async def stream_events(
    runtime: Runtime, caller: Caller, run_id: str, after: str | None, last_event_id: str | None
) -> Response:
    """Check the run is the caller's, then stream; 404 (not a retry loop) for unknown runs."""
    cursor = _resume_point(after, last_event_id)
    if not is_run_id(run_id):
        raise not_found(run_id)
    known = runtime.hub.owner(run_id)  # followed here already: its owner needs no lookup
    if known and not caller.may_read(known):
        raise not_found(run_id)
    # Even for a followed run, whether the stream was trimmed past this client's position is
    # asked of Redis (one shared round trip for a burst of clients): the hub only knows its tail.
    first = await runtime.lookups.run(run_id, lambda: runtime.store.read(run_id, count=1))
    reset: RunState | None = None
    if not first:
        reset = await runtime.runs.get(run_id, caller.user_id)  # expired: the read model remembers
        if reset is None:
            raise not_found(run_id)
        frames = _reset_only(reset)
    else:
        first_id, first_event = first[0]
        whole = isinstance(first_event, RunRequested)
        owner = known or (first_event.user_id if isinstance(first_event, RunRequested) else "")
        owner = owner or await runtime.store.owner(run_id)
        if not caller.may_read(owner):
            raise not_found(run_id)
        if not whole and parse_id(cursor) < parse_id(first_id):  # a full replay (0) included
            reset = await runtime.runs.get(run_id, owner)  # trimmed: say so, never a gap
        return EventStream(Follow(runtime, run_id, cursor, reset, owner))
    return StreamingResponse(frames, media_type="text/event-stream", headers=SSE_HEADERS)


def _reset_frame(state: RunState) -> bytes:
    reason = "the events after your position are gone"
    return sse_frame("reset", {"reason": reason, "state": state_view(state)})


async def _reset_only(state: RunState) -> AsyncIterator[bytes]:
    yield b": the run's events have expired; here is its final state\n\n"
    yield _reset_frame(state)
    if state.terminal:
        yield end_frame(state).data


@dataclass(frozen=True, slots=True)
class Follow:
    """A checked request to follow a run from ``cursor`` (its owner is ``owner``)."""

    runtime: Runtime
    run_id: str
    cursor: str
    reset: RunState | None
    owner: str

    def head(self) -> bytes:
        """What precedes the run's frames: ``retry:``, a comment, and the reset if there is one."""
        head = f"retry: {self.runtime.settings.sse_retry_ms}\n: stream of run {self.run_id}\n\n".encode()
        return head + (_reset_frame(self.reset) if self.reset is not None else b"")


class EventStream(Response):
    """The SSE response, an ASGI send loop: the hub fills the client's bounded queue, this loop
    drains it into ``send`` (one task per client, woken once per frame or batch).

    The per-user slot is held from the check until the stream ends, whichever way it ends.
    """

    media_type = "text/event-stream"

    def __init__(self, follow: Follow) -> None:
        follow.runtime.streams.take(follow.owner)  # 429 past the per-user cap, before any byte
        self.follow = follow
        self.status_code = 200
        self.background = None
        self.init_headers(SSE_HEADERS)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            await _pump(self.follow, receive, send)
        finally:
            self.follow.runtime.streams.give_back(self.follow.owner)


async def _pump(follow: Follow, receive: Receive, send: Send) -> None:
    """The head, then the hub's frames for this client until the run's end, a cut or a hang-up."""
    runtime, run_id = follow.runtime, follow.run_id
    gauge = metrics().sse_connections
    gauge.inc()
    listener = await runtime.hub.join(run_id, follow.cursor, runtime.settings.sse_queue_size)
    watcher = asyncio.ensure_future(_hang_up_on_disconnect(listener, receive))
    try:
        await send({"type": "http.response.body", "body": follow.head(), "more_body": True})
        # The hub queues heartbeats too, so waiting for a frame suffices: no timer per client.
        final = False
        while not final:
            data, final = await listener.drain()
            await send({"type": "http.response.body", "body": data, "more_body": not final})
            del data  # a replay is this client's own bytes: not held while it waits for more
        # A run's end wakes all its clients at once: let every one of them write its last frame
        # before any stream's teardown (the request's end in every layer) runs in between.
        await asyncio.sleep(0)
        if listener.dropped:
            logger.info("SSE client of run %s fell behind and was cut; it resumes with Last-Event-ID", run_id)
    finally:
        watcher.cancel()
        runtime.hub.leave(listener)
        gauge.dec()


async def _hang_up_on_disconnect(listener: Listener, receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    listener.hang_up()
