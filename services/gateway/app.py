"""The gateway app: ``create_app(settings)`` wires routes, errors, limits and the lifespan."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, MutableMapping
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute

from services.gateway import admin, compare, forks, legacy, meta, problems, runs, shares
from services.gateway.limits import BodyLimit
from services.gateway.metrics import RequestMetrics
from services.gateway.runtime import Runtime, open_runtime
from services.gateway.settings import GatewaySettings
from services.gateway.submit import valid_pipelines
from shared.models import available_ids

API = "/api/trading"
DECISION = "/api/trading/decision"


def _ids(prefix: str) -> Callable[[APIRoute], str]:
    def unique(route: APIRoute) -> str:
        return f"{prefix}{route.name}"

    return unique


def is_event_stream(scope: MutableMapping[str, Any]) -> bool:
    """SSE streams skip FastAPI's own telemetry: an hours-long span with a wrapper on every frame."""
    path: str = scope.get("path", "")
    return scope.get("method") == "GET" and path.endswith("/events")


def registry_in_schema(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """``app.openapi`` with ``modelId`` and ``pipeline`` limited to what this gateway accepts now.

    Both are configuration (``TT_MODELS``, ``TT_PIPELINES``), read when the app starts, so the
    request model cannot name them; ``submit`` enforces them and the published schema states them.
    """

    def openapi() -> dict[str, Any]:
        schema = FastAPI.openapi(app)
        runtime: Runtime | None = getattr(app.state, "runtime", None)
        if runtime is not None:
            properties = schema["components"]["schemas"]["RunRequest"]["properties"]
            # only the models that can run here: a submit naming another is refused (422)
            properties["modelId"]["enum"] = available_ids(runtime.models)
            properties["pipeline"]["enum"] = valid_pipelines(runtime)
        return schema

    return openapi


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
        # One server span per request (the trace's root for POST /runs, whose context goes into
        # RunRequested); no spans per dependency, endpoint and serialization step, which would
        # outnumber the request's own work on every submit.
        telemetry={"exclude": is_event_stream, "operation_spans": False},
    )
    problems.install(app)
    app.openapi = registry_in_schema(app)  # type: ignore[method-assign]
    # The run routes first: routing tries routers in order, and POST /runs is the busiest route.
    app.include_router(runs.build_router(API), prefix=API, generate_unique_id_function=_ids("runs_"))
    app.include_router(
        runs.build_router(DECISION), prefix=DECISION, generate_unique_id_function=_ids("decision_")
    )
    app.include_router(shares.build_router(API), prefix=API, generate_unique_id_function=_ids("shares_"))
    app.include_router(compare.build_router(), prefix=API, generate_unique_id_function=_ids("compare_"))
    app.include_router(forks.build_router(API), prefix=API, generate_unique_id_function=_ids("forks_"))
    app.include_router(legacy.build_router(settings))
    app.include_router(meta.build_router())
    app.include_router(admin.build_router())
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestMetrics)
    return app
