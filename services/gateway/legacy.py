"""The older blueprints' paths and JSON, kept so existing callers migrate without a flag day."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query
from fastapi.responses import JSONResponse

from services.gateway.auth import Caller
from services.gateway.problems import not_found
from services.gateway.runtime import Runtime, caller_of, runtime_of
from services.gateway.schemas import RunRequest, progress_view, state_view
from services.gateway.submit import cancel_run, submit_run
from shared.ids import is_run_id

CallerDep = Annotated[Caller, Depends(caller_of)]
RuntimeDep = Annotated[Runtime, Depends(runtime_of)]
IdemHeader = Annotated[str | None, Header(alias="Idempotency-Key", max_length=200)]
BASE = "/api/trading"


def build_router() -> APIRouter:
    router = APIRouter(prefix=BASE, tags=["compatibility"])

    @router.post("/run", status_code=202, summary="Polling blueprint: submit a run")
    async def post_run(
        body: RunRequest, caller: CallerDep, runtime: RuntimeDep, idem: IdemHeader = None
    ) -> JSONResponse:
        outcome = await submit_run(runtime, caller, body, idem)
        return JSONResponse(
            {"runId": outcome.run_id, "status": outcome.status},
            status_code=202 if outcome.created else 200,
            headers={"Location": f"{BASE}/progress/{outcome.run_id}"},
        )

    @router.get("/progress/{run_id}", summary="Polling blueprint: a run's progress")
    async def progress(run_id: str, caller: CallerDep, runtime: RuntimeDep) -> dict[str, Any]:
        state = await runtime.runs.get(run_id, caller.user_id) if is_run_id(run_id) else None
        if state is None:
            raise not_found(run_id)
        return progress_view(state)

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
        wait: Annotated[float | None, Query(ge=0, le=300, description="seconds to wait")] = None,
    ) -> JSONResponse:
        outcome = await submit_run(runtime, caller, body, idem)
        bound = min(runtime.settings.internal_wait_s if wait is None else wait, runtime.settings.max_wait_s)
        state = await runtime.wait_terminal(outcome.run_id, caller.user_id, bound)
        location = {"Location": f"{BASE}/runs/{outcome.run_id}"}
        if state is not None and state.terminal:
            return JSONResponse(state_view(state), status_code=200, headers=location)
        status = state.status if state else outcome.status
        return JSONResponse({"runId": outcome.run_id, "status": status}, status_code=202, headers=location)

    return router
