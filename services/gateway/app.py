"""The gateway app: ``create_app(settings)`` wires routes, errors, limits and the lifespan."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute

from services.gateway import legacy, meta, problems, runs
from services.gateway.limits import BodyLimit
from services.gateway.metrics import RequestMetrics
from services.gateway.runtime import open_runtime
from services.gateway.settings import GatewaySettings

API = "/api/trading"
DECISION = "/api/trading/decision"


def _ids(prefix: str) -> object:
    def unique(route: APIRoute) -> str:
        return f"{prefix}{route.name}"

    return unique


def is_event_stream(scope: MutableMapping[str, Any]) -> bool:
    """SSE streams skip FastAPI's own telemetry: an hours-long span with a wrapper on every frame."""
    path: str = scope.get("path", "")
    return scope.get("method") == "GET" and path.endswith("/events")


def create_app(settings: GatewaySettings) -> FastAPI:
    """A gateway app; clients are built when it starts (lifespan), never at import."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_runtime(settings) as runtime:
            app.state.runtime = runtime
            yield

    app = FastAPI(
        title="Tickertape gateway",
        version="1.0",
        description="Submit, follow (SSE), cancel and list background trading-agents runs.",
        lifespan=lifespan,
        telemetry={"exclude": is_event_stream},
    )
    problems.install(app)
    app.include_router(meta.build_router())
    app.include_router(runs.build_router(API), prefix=API, generate_unique_id_function=_ids("runs_"))  # type: ignore[arg-type]
    app.include_router(
        runs.build_router(DECISION),
        prefix=DECISION,
        generate_unique_id_function=_ids("decision_"),  # type: ignore[arg-type]
    )
    app.include_router(legacy.build_router())
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestMetrics)
    return app
