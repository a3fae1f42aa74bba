"""``POST /runs`` in plain ASGI: the hot route, without the framework's layers around it.

FastAPI spends more on a submit than the submit itself: routing, dependency solving, its request
telemetry and the middleware stack (exceptions, body limits, metrics), each an ASGI hop. The
gateway app (``app.Gateway``) hands POSTs to the two submit paths to ``serve_submit`` before any
of that. The work is the same as the FastAPI route's (``runs.post_run``): the same body limit,
authentication, validation (``runs.parse_run_request``), ``submit.submit_run``, server span,
problem+json errors and request metrics. The FastAPI route stays as the documented operation
(OpenAPI) and serves the submit when the app is mounted without ``Gateway``'s front door.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi.exceptions import RequestValidationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from services.gateway.metrics import metrics
from services.gateway.problems import Problem, store_unavailable, unexpected, validation_problem
from services.gateway.runs import accepted, parse_run_request
from services.gateway.runtime import Runtime
from services.gateway.submit import submit_run
from services.gateway.tracing import server_span

TOO_LARGE = object()
"""What ``read_body`` returns for a body over the limit."""


async def serve_submit(runtime: Runtime, base: str, scope: Scope, receive: Receive, send: Send) -> None:
    """Answer one ``POST {base}/runs`` completely (metrics included); never raises for bad input."""
    started = time.perf_counter()
    route = f"{base}/runs"
    response = await _respond(runtime, base, scope, receive)
    if response is None:  # the client went away before its body arrived
        return
    await response(scope, receive, send)
    observed = metrics()
    observed.requests.labels(route, "POST", str(response.status_code)).inc()
    observed.duration.labels(route).observe(time.perf_counter() - started)


async def _respond(runtime: Runtime, base: str, scope: Scope, receive: Receive) -> Response | None:
    path: str = scope["path"]
    limit = runtime.settings.max_body_bytes
    raw = await read_body(scope, receive, limit)
    if raw is None:
        return None
    if raw is TOO_LARGE:
        return Problem(413, f"The request body is larger than {limit} bytes.").response(path)
    assert isinstance(raw, bytes)
    request = Request(scope)
    with server_span(request, f"{base}/runs") as span:
        try:
            caller = runtime.auth.caller(request)
            body = parse_run_request(request.headers.get("content-type"), raw)
            outcome = await submit_run(runtime, caller, body, request.headers.get("idempotency-key"))
        except Problem as problem:
            return problem.response(path)
        except RequestValidationError as exc:
            return validation_problem(list(exc.errors())).response(path)
        except (RedisConnectionError, RedisTimeoutError) as exc:
            return store_unavailable("POST", path, exc).response(path)
        except Exception:
            return unexpected("POST", path).response(path)
        span.set_attribute("http.response.status_code", 202 if outcome.created else 200)
    return accepted(f"{base}/runs/{outcome.run_id}", outcome.run_id, outcome.status, outcome.created)


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes | object | None:
    """The whole body; ``TOO_LARGE`` past ``limit`` (declared or sent); None if the client left."""
    declared = _header(scope, b"content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        return TOO_LARGE
    chunks: list[bytes] = []
    size = 0
    while True:
        message: Any = await receive()
        if message["type"] != "http.request":
            return None
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return TOO_LARGE
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None
