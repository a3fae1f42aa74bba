"""The SSE endpoint: exact resume from a stream ID, live frames from the hub, a clear end."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from services.gateway.auth import Caller
from services.gateway.hub import CUT, Frame, Listener, end_frame, is_stream_id, parse_id, sse_frame
from services.gateway.metrics import metrics
from services.gateway.problems import invalid, not_found
from services.gateway.runtime import Runtime
from services.gateway.schemas import state_view
from services.gateway.server import TRANSPORT_EXTENSION
from shared.events import RunRequested
from shared.ids import is_run_id
from shared.reducer import RunState

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
) -> StreamingResponse:
    """Check the run is the caller's, then stream; 404 (not a retry loop) for unknown runs."""
    cursor = _resume_point(after, last_event_id)
    if not is_run_id(run_id):
        raise not_found(run_id)
    known = runtime.hub.owner(run_id)  # followed here already: no Redis round trip per client
    if known:
        if not caller.may_read(known):
            raise not_found(run_id)
        return EventStream(Follow(runtime, run_id, cursor, None, known))
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
        owner = first_event.user_id if isinstance(first_event, RunRequested) else ""
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


class EventStream(StreamingResponse):
    """The SSE response. Where the server exposes the connection's transport (our uvicorn
    protocol, see ``server.py``), the client is a ``DirectListener``: the hub writes each frame's
    pre-framed bytes straight to the socket, with no task switch or ASGI hop per client per frame.
    Elsewhere it is a plain streaming response fed from a bounded queue.
    """

    def __init__(self, follow: Follow) -> None:
        follow.runtime.streams.take(follow.owner)  # 429 past the per-user cap, before any byte
        super().__init__(_live(follow), media_type="text/event-stream", headers=SSE_HEADERS)
        self.follow = follow

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            transport = scope.get("extensions", {}).get(TRANSPORT_EXTENSION, {}).get("transport")
            if transport is None or scope.get("method") != "GET":
                await super().__call__(scope, receive, send)
                return
            await self.body_iterator.aclose()  # type: ignore[attr-defined]  # never started: nothing runs
            await _direct(self.follow, transport, self.raw_headers, receive, send)
        finally:
            self.follow.runtime.streams.give_back(self.follow.owner)


class DirectListener:
    """A client whose frames the hub writes to its transport; ``finished`` resolves at the end."""

    # Slots: the hub touches a thousand of these per frame; no per-instance dict to fetch too.
    __slots__ = ("after", "dropped", "finished", "limit", "run_id", "transport")

    def __init__(self, run_id: str, after: str, transport: asyncio.WriteTransport, limit: int) -> None:
        self.run_id = run_id
        self.after = parse_id(after)
        self.transport = transport
        self.limit = limit
        self.dropped = False
        self.finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def offer(self, frame: Frame) -> bool:
        # Called for every client of a run for every frame: ``_write`` inlined, one lookup each.
        transport = self.transport
        if frame.key <= self.after or transport.is_closing():
            return not self.dropped
        if self.dropped or transport.get_write_buffer_size() > self.limit:
            return False
        transport.write(frame.chunk)
        if frame.final:
            self._finish()
        return True

    def replay(self, frames: list[Frame]) -> bool:
        fresh = [f for f in frames if f.key > self.after]
        if not fresh or self.transport.is_closing():
            return True
        return self._write(b"".join(f.chunk for f in fresh), fresh[-1].final)

    def _write(self, chunk: bytes, final: bool) -> bool:
        # Bytes the kernel would not take wait in the transport's buffer: past the limit, the
        # client is not reading fast enough.
        if self.dropped or self.transport.get_write_buffer_size() > self.limit:
            return False
        self.transport.write(chunk)
        if final:
            self._finish()
        return True

    def cut(self) -> None:
        self.dropped = True
        self._finish()

    def _finish(self) -> None:
        if not self.finished.done():
            self.finished.set_result(None)


async def _direct(
    follow: Follow, transport: asyncio.WriteTransport, headers: list[tuple[bytes, bytes]],
    receive: Receive, send: Send,
) -> None:  # fmt: skip
    """Head through ASGI, then frames from the hub to the socket, then the end through ASGI."""
    runtime, run_id = follow.runtime, follow.run_id
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": follow.head(), "more_body": True})
    listener = DirectListener(run_id, follow.cursor, transport, runtime.settings.sse_buffer_bytes)
    gauge = metrics().sse_connections
    gauge.inc()
    try:
        await runtime.hub.attach(listener)
        connected = await _until_finished(listener, receive)
    finally:
        runtime.hub.leave(listener)  # before the last send: the hub never writes after it
        gauge.dec()
    if listener.dropped:
        logger.info("SSE client of run %s fell behind and was cut; it resumes with Last-Event-ID", run_id)
        if connected:
            send_cut = {"type": "http.response.body", "body": CUT.data, "more_body": True}
            await send(send_cut)
    if connected:
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _until_finished(listener: DirectListener, receive: Receive) -> bool:
    """Wait for the run's end (or a cut); False if the client went away first."""
    disconnect = asyncio.ensure_future(_disconnected(receive))
    try:
        await asyncio.wait({listener.finished, disconnect}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        disconnect.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await disconnect
    return listener.finished.done() and not listener.transport.is_closing()


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _live(follow: Follow) -> AsyncIterator[bytes]:
    """The generic path: one task per client, fed by a bounded queue."""
    runtime, run_id = follow.runtime, follow.run_id
    gauge = metrics().sse_connections
    gauge.inc()
    listener = await runtime.hub.join(run_id, follow.cursor, runtime.settings.sse_queue_size)
    try:
        yield follow.head()
        # The hub queues heartbeats too, so a plain get() suffices: no timer per client per frame.
        while True:
            data, final = _drain(listener, await listener.queue.get())
            yield data
            if final:
                break
        if listener.dropped:
            logger.info("SSE client of run %s fell behind and was cut; it resumes with Last-Event-ID", run_id)
    finally:
        runtime.hub.leave(listener)
        gauge.dec()


def _drain(listener: Listener, frame: Frame) -> tuple[bytes, bool]:
    """``frame`` and whatever else is already queued, as one write (a replay is one write)."""
    queue = listener.queue
    if queue.empty():
        return frame.data, frame.final
    frames = [frame]
    while not queue.empty() and not frames[-1].final:
        frames.append(queue.get_nowait())
    return b"".join(f.data for f in frames), frames[-1].final
