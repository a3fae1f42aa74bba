"""The SSE endpoint: exact resume from a stream ID, live frames from the hub, a clear end."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from fastapi.responses import StreamingResponse

from services.gateway.auth import Caller
from services.gateway.hub import end_frame, is_stream_id, parse_id, sse_frame
from services.gateway.metrics import metrics
from services.gateway.problems import invalid, not_found
from services.gateway.runtime import Runtime
from services.gateway.schemas import state_view
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
        if known != caller.user_id:
            raise not_found(run_id)
        return _response(_live(runtime, run_id, cursor, None))
    first = await runtime.store.read(run_id, count=1)
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
        if owner != caller.user_id:
            raise not_found(run_id)
        if not whole and cursor != "0-0" and parse_id(cursor) < parse_id(first_id):
            reset = await runtime.runs.get(run_id, caller.user_id)  # trimmed: say so, never a gap
        frames = _live(runtime, run_id, cursor, reset)
    return _response(frames)


def _response(frames: AsyncIterator[bytes]) -> StreamingResponse:
    return StreamingResponse(frames, media_type="text/event-stream", headers=SSE_HEADERS)


def _reset_frame(state: RunState) -> bytes:
    reason = "the events after your position are gone"
    return sse_frame("reset", {"reason": reason, "state": state_view(state)})


async def _reset_only(state: RunState) -> AsyncIterator[bytes]:
    yield b": the run's events have expired; here is its final state\n\n"
    yield _reset_frame(state)
    if state.terminal:
        yield end_frame(state).data


async def _live(runtime: Runtime, run_id: str, cursor: str, reset: RunState | None) -> AsyncIterator[bytes]:
    settings = runtime.settings
    gauge = metrics().sse_connections
    gauge.inc()
    listener = await runtime.hub.join(run_id, cursor, settings.sse_queue_size)
    try:
        yield f"retry: {settings.sse_retry_ms}\n: stream of run {run_id}\n\n".encode()
        if reset is not None:
            yield _reset_frame(reset)
        while not listener.dropped:
            try:
                async with asyncio.timeout(settings.sse_heartbeat_s):  # no task per message, unlike wait_for
                    frame = await listener.queue.get()
            except TimeoutError:
                yield b": heartbeat\n\n"
                continue
            yield frame.data
            if frame.final:
                return
        logger.info("SSE client of run %s fell behind and was cut; it resumes with Last-Event-ID", run_id)
    finally:
        runtime.hub.leave(listener)
        gauge.dec()
