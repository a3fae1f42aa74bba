"""Compare two of the caller's runs: ``GET /runs/{a}/diff/{b}`` (docs/api.md)."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from services.gateway.auth import Caller
from services.gateway.problems import not_found
from services.gateway.runtime import Runtime, caller_of, reader_of, runtime_of
from services.gateway.schemas import camelize
from shared.ids import is_run_id
from shared.run_state import RunState

CallerDep = Annotated[Caller, Depends(caller_of)]
RuntimeDep = Annotated[Runtime, Depends(runtime_of)]


def facts(state: RunState) -> dict[str, Any]:
    """The comparable numbers of a run, flat: what a side-by-side view lines up."""
    out: dict[str, Any] = {
        "status": state.status,
        "symbol": state.symbol,
        "modelId": state.model_id,
        "analysts": list(state.analysts),
        "options": camelize(msgspec.to_builtins(state.options)),
        "durationS": state.duration_s,
        "costUsd": state.usage.cost_usd,
        "llmCalls": state.usage.calls,
        "tokens": state.usage.prompt_tokens + state.usage.completion_tokens,
    }
    result = state.result
    if result is not None:
        out |= {"decision": result.decision, "rating": result.rating, "confidence": result.confidence}
        out |= {"horizon": result.horizon, "lastClose": result.last_close}
        for report in result.reports:
            out[f"analysts.{report.analyst}.signal"] = report.signal
            out[f"analysts.{report.analyst}.score"] = report.score
    return out


def diff(a: RunState, b: RunState) -> dict[str, Any]:
    left, right = facts(a), facts(b)
    changed = {
        k: {"a": left.get(k), "b": right.get(k)} for k in {*left, *right} if left.get(k) != right.get(k)
    }
    same = sorted(left.keys() & right.keys() - changed.keys())
    return {
        "a": a.run_id,
        "b": b.run_id,
        "changed": dict(sorted(changed.items())),
        "same": same,
        "sameValues": {k: left[k] for k in same},  # so a side-by-side view can show both columns
    }


def build_router() -> APIRouter:
    router = APIRouter(tags=["runs"])

    @router.get("/runs/{run_a}/diff/{run_b}", summary="What differs between two of your runs")
    async def run_diff(run_a: str, run_b: str, caller: CallerDep, runtime: RuntimeDep) -> JSONResponse:
        states = []
        for run_id in (run_a, run_b):
            state = (
                await runtime.runs.get(run_id, await reader_of(runtime, caller, run_id))
                if is_run_id(run_id)
                else None
            )
            if state is None:
                raise not_found(run_id)
            states.append(state)
        return JSONResponse(diff(states[0], states[1]))

    return router
