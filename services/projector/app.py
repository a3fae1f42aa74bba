"""The projector's internal HTTP API (read-only, for the gateway); ``ProjectorService`` serves it."""

from __future__ import annotations

import contextlib
import logging
import os
from typing import TYPE_CHECKING, Annotated, Any, Literal

import msgspec
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException
from starlette.responses import Response

from services.projector.queries import MAX_LIMIT, CursorError
from shared.problems import PROBLEM_JSON, problem_bytes

if TYPE_CHECKING:
    from services.projector.service import ProjectorService

logger = logging.getLogger(__name__)

StatusFilter = Literal["active", "pending", "running", "completed", "failed", "timeout", "cancelled"]
UserId = Annotated[str, Query(min_length=1, max_length=200)]


def problem(status: int, title: str, detail: str, *, field: str | None = None, **extra: Any) -> Response:
    slug = title.lower().replace(" ", "-")
    body = problem_bytes(status, detail, slug=slug, title=title, field=field, extra=extra)
    return Response(body, status_code=status, media_type=PROBLEM_JSON)


def json_response(body: bytes) -> Response:
    return Response(body, media_type="application/json")


def create_app(service: ProjectorService) -> FastAPI:
    """The app over a started service (it has no lifespan: the service owns every connection)."""
    app = FastAPI(title="Tickertape projector (internal)")
    app.state.service = service
    _errors(app)
    _runs(app, service)
    _operations(app, service)
    return app


def _errors(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        errors = [
            {"field": ".".join(str(p) for p in e.get("loc", ())[1:]), "message": str(e.get("msg", ""))}
            for e in exc.errors()
        ]
        first = errors[0] if errors else {"field": "", "message": "invalid request"}
        detail = f"{first['field']}: {first['message']}"
        return problem(422, "Validation error", detail, field=first["field"], errors=errors)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        return problem(exc.status_code, "HTTP error", str(exc.detail))


def _runs(app: FastAPI, service: ProjectorService) -> None:
    @app.get("/internal/runs/{run_id}")
    async def get_run(run_id: str, user_id: UserId) -> Response:
        state = await service.queries.get(run_id, user_id)
        if state is None:
            return problem(404, "Run not found", f"no run {run_id} for this user")
        return json_response(state.encode())

    @app.get("/internal/runs")
    async def list_runs(
        user_id: UserId,
        symbol: Annotated[str | None, Query(max_length=32)] = None,
        status: StatusFilter | None = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50,
        cursor: Annotated[str | None, Query(max_length=500)] = None,
        archived: bool = False,
    ) -> Response:
        try:
            page = await service.queries.page(
                user_id, symbol=symbol, status=status, limit=limit, cursor=cursor, archived=archived
            )
        except CursorError as exc:
            return problem(422, "Validation error", str(exc), field="cursor")
        runs = b",".join(state.encode() for state in page.states)
        cursor_json = msgspec.json.encode(page.next_cursor)
        return json_response(b'{"runs":[' + runs + b'],"next_cursor":' + cursor_json + b"}")

    @app.get("/internal/counts")
    async def counts(user_id: UserId) -> Response:
        return json_response(msgspec.json.encode(await service.queries.counts(user_id)))


def _operations(app: FastAPI, service: ProjectorService) -> None:
    @app.get("/internal/checkpoint")
    async def checkpoint() -> Response:
        return json_response(msgspec.json.encode(await service.checkpoint()))

    @app.get("/healthz")
    async def healthz() -> Response:
        return json_response(msgspec.json.encode({"status": "ok", "pid": os.getpid()}))  # `up` checks the pid

    @app.get("/readyz")
    async def readyz() -> Response:
        try:
            await service.redis.ping()
        except Exception as exc:
            logger.warning("not ready: redis unreachable: %s", exc)
            return problem(503, "Not ready", "redis is unreachable")
        return json_response(b'{"status":"ready"}')

    @app.get("/metrics")
    async def prometheus() -> Response:
        with contextlib.suppress(Exception):  # a scrape must answer even when Redis does not
            await service.checkpoint()
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
