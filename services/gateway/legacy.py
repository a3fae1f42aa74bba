"""The older blueprints' paths and JSON, kept so existing callers migrate without a flag day.

docs/migration.md walks a front end from these to the run API and SSE.
"""

from __future__ import annotations

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse

from services.gateway.problems import not_found
from services.gateway.runs import CallerDep, IdemHeader, RuntimeDep, conditional, etag_of
from services.gateway.runtime import reader_of, runtime_from
from services.gateway.schemas import RunRequest, progress_view, state_view
from services.gateway.settings import GatewaySettings
from services.gateway.submit import cancel_run, submit_run
from shared.ids import is_run_id

BASE = "/api/trading"


def build_router(settings: GatewaySettings) -> APIRouter:
    """The polling blueprint's routes and the synchronous call; ``wait`` is bounded by settings."""
    router = APIRouter(prefix=BASE, tags=["compatibility"])
    wait_bound = settings.sync_wait_max_s
    wait_default = min(settings.internal_wait_s, wait_bound)

    @router.post("/run", status_code=202, summary="Polling blueprint: submit a run")
    async def post_run(
        body: RunRequest, caller: CallerDep, request: Request, idem: IdemHeader = None
    ) -> JSONResponse:
        outcome = await submit_run(runtime_from(request), caller, body, idem)
        return JSONResponse(
            {"runId": outcome.run_id, "status": outcome.status},
            status_code=202 if outcome.created else 200,
            headers={"Location": f"{BASE}/progress/{outcome.run_id}"},
        )

    @router.get("/progress/{run_id}", summary="Polling blueprint: a run's progress (ETag)")
    async def progress(run_id: str, request: Request, caller: CallerDep, runtime: RuntimeDep) -> Response:
        if not is_run_id(run_id):
            raise not_found(run_id)
        state = await runtime.runs.get(run_id, await reader_of(runtime, caller, run_id))
        if state is None:
            raise not_found(run_id)
        return conditional(request, etag_of(state), lambda: progress_view(state))

    @router.post("/cancel/{run_id}", status_code=202, summary="Polling blueprint: cancel a run")
    async def cancel(run_id: str, caller: CallerDep, runtime: RuntimeDep) -> JSONResponse:
        state = await cancel_run(runtime, caller, run_id)
        return JSONResponse({"runId": run_id, "status": state.status, "cancelRequested": True}, 202)

    @router.post("/decision/internal", summary="The old synchronous call, on top of the queue")
    async def decision_internal(
        body: RunRequest,
        caller: CallerDep,
        runtime: RuntimeDep,
        idem: IdemHeader = None,
        # A default-value Query: the bound comes from settings, and an annotation naming a
        # local cannot be resolved under postponed annotations.
        wait: float = Query(
            wait_default,
            ge=0,
            le=wait_bound,
            description=f"seconds to wait for the end (at most TT_SYNC_WAIT_MAX_S = {wait_bound:g}; "
            "more is a 422), then 202 with the runId",
        ),
    ) -> JSONResponse:
        outcome = await submit_run(runtime, caller, body, idem)
        state = await runtime.wait_terminal(outcome.run_id, caller.user_id, wait)
        location = {"Location": f"{BASE}/runs/{outcome.run_id}"}
        if state is not None and state.terminal:
            return JSONResponse(state_view(state), status_code=200, headers=location)
        status = state.status if state else outcome.status
        return JSONResponse({"runId": outcome.run_id, "status": status}, status_code=202, headers=location)

    return router
