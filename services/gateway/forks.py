"""Fork: ``POST /runs/{id}/fork`` starts a run that reuses its source's work before ``fromStep``.

The new run's stream starts with its ``RunRequested`` (``parentRunId``, ``fromStep``) followed,
in the same submit step, by copies of the source's ``StepCompleted`` events for the steps before
``fromStep`` that both plans share. The runner already skips steps its run's stream shows
completed (that is how a resumed run avoids paying twice), so it recomputes only the rest.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from services.gateway.auth import Caller
from services.gateway.problems import Problem, invalid, not_found
from services.gateway.runtime import Runtime, caller_of, runtime_of
from services.gateway.schemas import AnalystId
from shared.catalog import planned_steps
from shared.events import RunRequested, StepCompleted, utcnow
from shared.ids import is_run_id, new_run_id
from shared.submits import Capped, Submitted
from shared.telemetry import current_traceparent

CallerDep = Annotated[Caller, Depends(caller_of)]
RuntimeDep = Annotated[Runtime, Depends(runtime_of)]


class ForkRequest(BaseModel):
    """What changes; anything left out is the source run's."""

    model_config = ConfigDict(extra="forbid", strict=True)

    from_step: str = Field(alias="fromStep", min_length=1, max_length=100)
    model_id: str | None = Field(None, alias="modelId", min_length=1, max_length=100)
    analysts: list[AnalystId] | None = Field(None, min_length=1, max_length=6)
    debate_rounds: int | None = Field(None, alias="debateRounds", ge=0, le=5)
    risk_rounds: int | None = Field(None, alias="riskRounds", ge=1, le=5)
    max_cost_usd: float | None = Field(None, alias="maxCostUsd", gt=0, le=1000, allow_inf_nan=False)


def _forked(source: RunRequested, body: ForkRequest, user_id: str) -> RunRequested:
    options = source.options
    if body.debate_rounds is not None:
        options = msgspec.structs.replace(options, debate_rounds=body.debate_rounds)
    if body.risk_rounds is not None:
        options = msgspec.structs.replace(options, risk_rounds=body.risk_rounds)
    if body.max_cost_usd is not None:
        options = msgspec.structs.replace(options, max_cost_usd=body.max_cost_usd)
    return msgspec.structs.replace(
        source,
        run_id=new_run_id(),
        user_id=user_id,
        model_id=body.model_id or source.model_id,
        analysts=tuple(dict.fromkeys(body.analysts)) if body.analysts else source.analysts,
        options=options,
        idempotency_key=None,
        webhook=None,
        parent_run_id=source.run_id,
        from_step=body.from_step,
        traceparent=current_traceparent(),
        at=utcnow(),
    )


def build_router(base: str) -> APIRouter:
    router = APIRouter(tags=["runs"])

    @router.post("/runs/{run_id}/fork", status_code=202, summary="Re-run from a step with changed options")
    async def fork_run(
        run_id: str, body: ForkRequest, caller: CallerDep, runtime: RuntimeDep
    ) -> JSONResponse:
        entries = await runtime.store.read(run_id) if is_run_id(run_id) else []
        source = entries[0][1] if entries else None
        if not isinstance(source, RunRequested) or source.user_id != caller.user_id:
            raise not_found(run_id)
        if body.model_id is not None and body.model_id not in runtime.models:
            raise invalid("modelId", f"unknown model {body.model_id!r}")
        event = _forked(source, body, caller.user_id)
        plan = planned_steps(event)
        if body.from_step not in plan:
            raise invalid("fromStep", f"not a step of the forked run; its steps: {', '.join(plan)}")
        before = set(plan[: plan.index(body.from_step)])
        carried = [
            msgspec.structs.replace(e, run_id=event.run_id, traceparent=event.traceparent)
            for _, e in entries
            if isinstance(e, StepCompleted) and e.step in before
        ]
        outcome = await runtime.store.submit(event, cap=runtime.settings.max_active_runs, carried=carried)
        if isinstance(outcome, Capped):
            raise Problem(
                429, f"You already have {outcome.cap} active runs (the limit).", slug="too-many-active-runs"
            )
        if not isinstance(outcome, Submitted):
            raise Problem(503, "The fork was not confirmed; try again.", slug="not-replicated")
        doc = {
            "runId": event.run_id,
            "status": "pending",
            "parentRunId": run_id,
            "reusedSteps": [e.step for e in carried],
        }
        return JSONResponse(doc, status_code=202, headers={"Location": f"{base}/runs/{event.run_id}"})

    return router
