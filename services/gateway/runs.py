"""The run API (DESIGN §4): submit, read (ETag, long-poll), list, cancel, wait."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from services.gateway.auth import Caller
from services.gateway.problems import Problem, invalid, not_found
from services.gateway.queries import BadCursor, ProjectorUnavailable
from services.gateway.runtime import Runtime, caller_of, runtime_of
from services.gateway.schemas import RunRequest, state_view
from services.gateway.sse import stream_events
from services.gateway.submit import cancel_run, submit_run
from services.gateway.tracing import server_span
from shared.ids import is_run_id
from shared.reducer import RunState

StatusFilter = Literal["active", "pending", "running", "completed", "failed", "timeout", "cancelled"]
CallerDep = Annotated[Caller, Depends(caller_of)]
RuntimeDep = Annotated[Runtime, Depends(runtime_of)]
IdemHeader = Annotated[str | None, Header(alias="Idempotency-Key", max_length=200)]
MAX_LIMIT = 100


def etag_of(state: RunState) -> str:
    return f'"{state.last_event_id}"'


def etag_matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    tags = {t.strip().removeprefix("W/") for t in header.split(",")}
    return "*" in tags or etag in tags


def run_response(request: Request, state: RunState, status_code: int = 200) -> Response:
    etag = etag_of(state)
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if status_code == 200 and etag_matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    return JSONResponse(state_view(state), status_code=status_code, headers=headers)


def accepted(location: str, run_id: str, status: str, created: bool) -> JSONResponse:
    return JSONResponse(
        {"runId": run_id, "status": status},
        status_code=202 if created else 200,
        headers={"Location": location},
    )


SUBMIT_OPENAPI: dict[str, Any] = {
    "parameters": [
        {"name": "Idempotency-Key", "in": "header", "required": False, "schema": {
            "anyOf": [{"type": "string", "maxLength": 200}, {"type": "null"}], "title": "Idempotency-Key"}},
    ],
    "requestBody": {"required": True, "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/RunRequest"}}}},
    "responses": {"422": {"description": "Validation Error", "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/HTTPValidationError"}}}}},
}  # fmt: skip


def parse_run_request(content_type: str | None, raw: bytes) -> RunRequest:
    """The body as a ``RunRequest``; errors as FastAPI would report them (422 naming the field)."""
    if content_type and "json" not in content_type.lower():
        error = {"type": "json_invalid", "loc": ("body",), "msg": "not JSON",
                 "ctx": {"error": f"send the body as application/json, not {content_type}"}}  # fmt: skip
        raise RequestValidationError([error])
    try:
        return RunRequest.model_validate_json(raw)
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        raise RequestValidationError(errors) from None


def build_router(base: str) -> APIRouter:
    """The run routes; mounted under ``/api/trading`` and ``/api/trading/decision``."""
    router = APIRouter(tags=["runs"])

    # The hot path takes the raw request: no dependency solving, the body validated from its bytes
    # in one pydantic-core call. The OpenAPI operation is declared to match (same as the aliases).
    @router.post("/runs", status_code=202, summary="Submit a run", openapi_extra=SUBMIT_OPENAPI)
    async def post_run(request: Request) -> JSONResponse:
        with server_span(request, f"{base}/runs") as span:
            runtime: Runtime = request.app.state.runtime
            caller = runtime.auth.caller(request)
            body = parse_run_request(request.headers.get("content-type"), await request.body())
            outcome = await submit_run(runtime, caller, body, request.headers.get("idempotency-key"))
            span.set_attribute("http.response.status_code", 202 if outcome.created else 200)
        return accepted(f"{base}/runs/{outcome.run_id}", outcome.run_id, outcome.status, outcome.created)

    @router.get("/runs", summary="List your runs, newest first")
    async def list_runs(
        caller: CallerDep,
        runtime: RuntimeDep,
        symbol: Annotated[str | None, Query(max_length=10, pattern=r"^[A-Za-z0-9.\-^=]+$")] = None,
        status: StatusFilter | None = None,
        limit: Annotated[int, Query(ge=1, description="capped at 100")] = 20,
        cursor: Annotated[str | None, Query(max_length=200)] = None,
    ) -> dict[str, Any]:
        params: dict[str, Any] = {"symbol": symbol.upper() if symbol else None, "status": status}
        params |= {"limit": min(limit, MAX_LIMIT), "cursor": cursor}
        try:
            page = await runtime.runs.list(caller.user_id, params)
        except BadCursor as exc:
            raise invalid("cursor", "not a cursor this API handed out; start again without one") from exc
        except ProjectorUnavailable as exc:
            detail = "Run history is unavailable right now (the projector is not reachable); retry."
            raise Problem(503, detail, headers={"Retry-After": "2"}) from exc
        runs = [state_view(s) for s in page.runs if s.user_id in ("", caller.user_id)]
        return {"runs": runs, "nextCursor": page.next_cursor}

    @router.get("/runs/{run_id}", summary="One run: status, steps, result (ETag; ?wait= long-polls)")
    async def get_run(
        run_id: str,
        request: Request,
        caller: CallerDep,
        runtime: RuntimeDep,
        wait: Annotated[float, Query(ge=0, le=60, description="seconds to wait for the end")] = 0,
    ) -> Response:
        state = await _visible(runtime, caller, run_id, min(wait, runtime.settings.max_wait_s))
        return run_response(request, state)

    @router.post("/runs/{run_id}/wait", summary="Wait for a run to end (bounded)")
    async def wait_run(
        run_id: str,
        request: Request,
        caller: CallerDep,
        runtime: RuntimeDep,
        timeout: Annotated[float, Query(ge=0, le=60)] = 30,
    ) -> Response:
        state = await _visible(runtime, caller, run_id, min(timeout, runtime.settings.max_wait_s))
        return run_response(request, state)

    @router.delete("/runs/{run_id}", status_code=202, summary="Cancel a queued or running run")
    async def delete_run(run_id: str, caller: CallerDep, runtime: RuntimeDep) -> JSONResponse:
        state = await cancel_run(runtime, caller, run_id)
        return JSONResponse({"runId": run_id, "status": state.status, "cancelRequested": True}, 202)

    @router.get(
        "/runs/{run_id}/events",
        summary="Server-sent events: replay after Last-Event-ID / ?after=, then live",
        response_class=Response,
        responses={200: {"content": {"text/event-stream": {}}}},
    )
    async def run_events(
        run_id: str,
        caller: CallerDep,
        runtime: RuntimeDep,
        after: Annotated[str | None, Query(max_length=41)] = None,
        last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=41)] = None,
    ) -> Response:
        return await stream_events(runtime, caller, run_id, after, last_event_id)

    return router


async def _visible(runtime: Runtime, caller: Caller, run_id: str, wait_s: float) -> RunState:
    if not is_run_id(run_id):
        raise not_found(run_id)
    state = await runtime.wait_terminal(run_id, caller.user_id, wait_s)
    if state is None:
        raise not_found(run_id)
    return state
