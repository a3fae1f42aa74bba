"""The gateway app: ``create_app(settings)`` wires routes, errors, limits and the lifespan."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.types import Receive, Scope, Send

from services.gateway import legacy, meta, problems, runs
from services.gateway.fastpath import serve_submit
from services.gateway.limits import BodyLimit
from services.gateway.metrics import RequestMetrics
from services.gateway.runtime import Runtime, open_runtime
from services.gateway.settings import GatewaySettings

API = "/api/trading"
DECISION = "/api/trading/decision"
SUBMIT_BASES = {f"{API}/runs": API, f"{DECISION}/runs": DECISION}
SUBMIT_PATHS = frozenset(SUBMIT_BASES)


class Gateway(FastAPI):
    """FastAPI with a front door for the hot route: ``POST /runs`` is served by
    ``fastpath.serve_submit`` before routing and the middleware stack (see fastpath.py)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            base = SUBMIT_BASES.get(scope["path"])
            runtime: Runtime | None = getattr(self.state, "runtime", None)
            if base is not None and runtime is not None:
                await serve_submit(runtime, base, scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def _ids(prefix: str) -> object:
    def unique(route: APIRoute) -> str:
        return f"{prefix}{route.name}"

    return unique


def is_event_stream(scope: MutableMapping[str, Any]) -> bool:
    """SSE streams skip FastAPI's own telemetry: an hours-long span with a wrapper on every frame."""
    path: str = scope.get("path", "")
    return scope.get("method") == "GET" and path.endswith("/events")


def traced_elsewhere(scope: MutableMapping[str, Any]) -> bool:
    """Requests FastAPI's telemetry leaves alone: SSE streams, and submits (their own span).

    FastAPI's request telemetry costs ~180 us a request even when the span is not sampled, a
    third of a submit; ``submit.submit_run`` opens the same server span itself for ~30 us.
    """
    return is_event_stream(scope) or is_submit(scope)


def is_submit(scope: MutableMapping[str, Any]) -> bool:
    path: str = scope.get("path", "")
    return scope.get("method") == "POST" and path in SUBMIT_PATHS


def create_app(settings: GatewaySettings) -> Gateway:
    """A gateway app; clients are built when it starts (lifespan), never at import."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_runtime(settings) as runtime:
            app.state.runtime = runtime
            yield

    app = Gateway(
        title="Tickertape gateway",
        version="1.0",
        description="Submit, follow (SSE), cancel and list background trading-agents runs.",
        lifespan=lifespan,
        # One server span per request (the trace's root for POST /runs); no spans per dependency,
        # endpoint and serialization step (two more spans on every request, ~25% of a submit).
        telemetry={"exclude": traced_elsewhere, "operation_spans": False},
    )
    problems.install(app)
    # The run routes first: routing tries routers in order, and POST /runs is the hot path.
    app.include_router(runs.build_router(API), prefix=API, generate_unique_id_function=_ids("runs_"))  # type: ignore[arg-type]
    app.include_router(
        runs.build_router(DECISION),
        prefix=DECISION,
        generate_unique_id_function=_ids("decision_"),  # type: ignore[arg-type]
    )
    app.include_router(legacy.build_router())
    app.include_router(meta.build_router())
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestMetrics)
    return app
