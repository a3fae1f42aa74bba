"""The submit path's own server span (FastAPI's request telemetry is skipped for it, see app.py)."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind
from starlette.requests import Request


@functools.cache
def tracer() -> trace.Tracer:
    """Built on first use (a proxy until the provider is installed), then reused."""
    return trace.get_tracer("services.gateway")


@contextlib.contextmanager
def server_span(request: Request, route: str) -> Iterator[Span]:
    """``POST {route}`` as a server span, continuing a caller's ``traceparent`` if it sent one."""
    attributes = {"http.request.method": request.method, "http.route": route}
    with tracer().start_as_current_span(
        f"{request.method} {route}",
        context=propagate.extract(request.headers),
        kind=SpanKind.SERVER,
        attributes=attributes,
        record_exception=False,  # a 4xx problem is the caller's error, not the server's
        set_status_on_exception=False,
    ) as span:
        yield span
