"""The run API (DESIGN §4): submit, read (ETag, long-poll), list, cancel, wait."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import JSONResponse

from services.gateway.auth import Caller
from services.gateway.problems import Problem, invalid, not_found
from services.gateway.queries import BadCursor
from services.gateway.runtime import Runtime, caller_of, reader_of, runtime_from, runtime_of
from services.gateway.schemas import IDEMPOTENCY_KEY_PATTERN, Accepted, RunRequest, owner_view, state_view
from services.gateway.sse import stream_events
from services.gateway.submit import cancel_run, submit_run
from shared.ids import is_run_id
from shared.run_state import RunState

StatusFilter = Literal["active", "pending", "running", "completed", "failed", "timeout", "cancelled"]
CallerDep = Annotated[Caller, Depends(caller_of)]
RuntimeDep = Annotated[Runtime, Depends(runtime_of)]
IdemHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        pattern=IDEMPOTENCY_KEY_PATTERN,
        description="A repeat with the same key and body answers the first run (200), for 24 h",
    ),
]
MAX_LIMIT = 100
SUBMITTED: dict[int | str, dict[str, Any]] = {
    200: {
        "model": Accepted,
        "description": "A repeat of an Idempotency-Key: the run it made; or (joined: true) your "
        "identical run that is pending or running",
    },
    429: {"description": "Active-run cap or submission rate reached (Retry-After)"},
}


def etag_of(state: RunState) -> str:
    return f'"{_version(state)}"'


def _version(state: RunState) -> str:
    """The run's last event, and when its outcome was measured: a later run's completion records
    an outcome on this run's row without an event of its own."""
    measured = state.outcome.observed_at if state.outcome is not None else None
    return state.last_event_id if measured is None else f"{state.last_event_id}~{measured.timestamp()}"


def page_etag(states: Sequence[RunState], next_cursor: str | None) -> str:
    """Changes whenever any listed run gains an event, or the page's membership changes."""
    digest = hashlib.sha256(str(next_cursor).encode())
    for state in states:
        digest.update(f"{state.run_id}:{_version(state)};".encode())
    return f'"p-{digest.hexdigest()[:32]}"'


def etag_matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    tags = {t.strip().removeprefix("W/") for t in header.split(",")}
    return "*" in tags or etag in tags


def conditional(request: Request, etag: str, view: Callable[[], Any]) -> Response:
    """200 with ``view()`` and its ETag, or 304 when the caller already holds that ETag: a
    2-second poller costs a lookup, not a render."""
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if etag_matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    return JSONResponse(view(), headers=headers)


def run_response(request: Request, state: RunState) -> Response:
    return conditional(request, etag_of(state), lambda: owner_view(state))


def accepted(
    location: str, run_id: str, status: str, created: bool, *, joined: bool = False, secret: str | None = None
) -> JSONResponse:
    doc: dict[str, Any] = {"runId": run_id, "status": status}
    if joined:
        doc["joined"] = True
    if secret is not None:
        doc["webhookSecret"] = secret  # once: it is kept beside the run, never shown again
    return JSONResponse(doc, status_code=202 if created else 200, headers={"Location": location})


def build_router(base: str) -> APIRouter:
    """The run routes; mounted under ``/api/trading`` and ``/api/trading/decision``."""
    router = APIRouter(tags=["runs"])

    @router.post(
        "/runs", status_code=202, response_model=Accepted, responses=SUBMITTED, summary="Submit a run"
    )
    async def post_run(
        body: RunRequest, caller: CallerDep, request: Request, idem: IdemHeader = None
    ) -> JSONResponse:
        outcome = await submit_run(runtime_from(request), caller, body, idem)
        location = f"{base}/runs/{outcome.run_id}"
        return accepted(
            location,
            outcome.run_id,
            outcome.status,
            outcome.created,
            joined=outcome.joined,
            secret=outcome.webhook_secret,
        )

    @router.get("/runs", summary="List your runs, newest first")
    async def list_runs(
        request: Request,
        caller: CallerDep,
        runtime: RuntimeDep,
        symbol: Annotated[str | None, Query(max_length=10, pattern=r"^[A-Za-z0-9.\-^=]+$")] = None,
        status: StatusFilter | None = None,
        limit: Annotated[int, Query(ge=1, description="capped at 100")] = 20,
        cursor: Annotated[str | None, Query(max_length=200)] = None,
        user: Annotated[str | None, Query(max_length=256, description="admins: another user's runs")] = None,
        archived: Annotated[
            bool, Query(description="true: the runs moved out of the history after its horizon")
        ] = False,
    ) -> Response:
        params: dict[str, Any] = {"symbol": symbol.upper() if symbol else None, "status": status}
        params |= {"limit": min(limit, MAX_LIMIT), "cursor": cursor, "archived": archived or None}
        whose = _listed_user(caller, user)
        try:
            page = await runtime.runs.list(whose, params)
        except BadCursor as exc:
            raise invalid("cursor", "not a cursor this API handed out; start again without one") from exc
        mine = [s for s in page.runs if s.user_id in ("", whose)]
        return conditional(
            request,
            page_etag(mine, page.next_cursor),
            lambda: {"runs": [state_view(s) for s in mine], "nextCursor": page.next_cursor},
        )

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


def _listed_user(caller: Caller, user: str | None) -> str:
    if user is None or user == caller.user_id:
        return caller.user_id
    if not caller.admin:
        raise Problem(403, "Only an admin may list another user's runs; leave out 'user'.", field="user")
    return user


async def _visible(runtime: Runtime, caller: Caller, run_id: str, wait_s: float) -> RunState:
    if not is_run_id(run_id):
        raise not_found(run_id)
    state = await runtime.wait_terminal(run_id, await reader_of(runtime, caller, run_id), wait_s)
    if state is None:
        raise not_found(run_id)
    return state
