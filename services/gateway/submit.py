"""Turning a validated request into a RunRequested (and a cancel into a RunCancelled)."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from opentelemetry import trace

from services.gateway.auth import Caller
from services.gateway.metrics import metrics
from services.gateway.problems import Problem, invalid, not_found
from services.gateway.runtime import Runtime
from services.gateway.schemas import RunRequest
from shared.catalog import PIPELINE_FULL, PIPELINES, TRADING
from shared.events import RunCancelled, RunOptions, RunRequested
from shared.ids import is_run_id, new_run_id
from shared.reducer import RunState
from shared.store import Capped, Duplicate, RefusalReason, Refused, Submitted
from shared.telemetry import current_traceparent

logger = logging.getLogger(__name__)

IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,200}$")
CAP_RETRY_AFTER_S = 10


@dataclass(frozen=True, slots=True)
class Outcome:
    run_id: str
    status: str
    created: bool


def _check(runtime: Runtime, caller: Caller, body: RunRequest, idem_key: str | None) -> None:
    if body.model_id not in runtime.models:
        valid = ", ".join(sorted(runtime.models))
        raise invalid(
            "modelId",
            f"unknown model {body.model_id!r}; valid ids: {valid}",
            validModelIds=sorted(runtime.models),
        )
    if body.priority == "high" and caller.user_id not in runtime.settings.high_priority_users:
        raise Problem(403, "You may not submit high-priority runs; use priority 'normal'.", field="priority")
    _check_pipeline(runtime, body.pipeline)
    if idem_key is not None and not IDEMPOTENCY_KEY.match(idem_key):
        raise invalid("Idempotency-Key", "must be 1-200 visible ASCII characters without spaces")


# -- pipelines registered with TT_PIPELINES (issue 16) ------------------------------------------


def _check_pipeline(runtime: Runtime, name: str) -> None:
    valid = [*PIPELINES, TRADING, *runtime.settings.pipelines]
    if name not in valid:
        raise invalid(
            "pipeline", f"unknown pipeline {name!r}; valid: {', '.join(valid)}", validPipelines=valid
        )


def _pipeline_of(body: RunRequest) -> tuple[str, str]:
    """(the pipeline that runs it, the built-in one's variant): 'full'/'noop' are the built-in's."""
    if body.pipeline in PIPELINES:
        return TRADING, body.pipeline
    return body.pipeline, PIPELINE_FULL


# -- end of the pipelines part -------------------------------------------------------------------


def _event(caller: Caller, body: RunRequest, idem_key: str | None) -> RunRequested:
    pipeline, variant = _pipeline_of(body)
    options = RunOptions(
        debate_rounds=body.debate_rounds,
        max_tokens=body.max_tokens,
        max_cost_usd=body.max_cost_usd,
        pipeline=variant,
        data_provider=body.data_provider,
    )
    return RunRequested(
        run_id=new_run_id(),
        user_id=caller.user_id,
        symbol=body.symbol,
        model_id=body.model_id,
        analysts=tuple(body.analysts),
        options=options,
        priority=body.priority,
        idempotency_key=idem_key,
        traceparent=current_traceparent(),
        pipeline=pipeline,
    )


async def submit_run(runtime: Runtime, caller: Caller, body: RunRequest, idem_key: str | None) -> Outcome:
    """Validate what pydantic cannot, rate-limit, then append RunRequested (at most once per key)."""
    _check(runtime, caller, body, idem_key)
    await runtime.limiter.hit(caller.user_id)
    event = _event(caller, body, idem_key)  # its traceparent is the request's server span
    trace.get_current_span().set_attribute("tickertape.run_id", event.run_id)
    fingerprint = body.fingerprint() if idem_key else ""
    outcome = await runtime.store.submit(
        event,
        cap=runtime.settings.max_active_runs,
        idempotency=(idem_key, f"{event.run_id}|{fingerprint}") if idem_key else None,
        idempotency_ttl_s=runtime.settings.idempotency_ttl_s,
    )
    match outcome:
        case Submitted(run_id=run_id):
            metrics().runs_submitted.labels(body.priority).inc()
            # DEBUG: the RunRequested event already records every submission (user, symbol,
            # traceparent); a formatted, redacted log line per request cost ~15% of a submit.
            logger.debug("run submitted", extra={"run_id": run_id, "symbol": body.symbol})
            return Outcome(run_id, "pending", True)
        case Duplicate(value=value):
            return await _repeat(runtime, caller, value, fingerprint)
        case Capped(cap=cap):
            raise Problem(
                429,
                f"You already have {cap} active runs (the limit); wait for one to finish or cancel one.",
                slug="too-many-active-runs",
                headers={"Retry-After": str(CAP_RETRY_AFTER_S)},
                extra={"limit": cap},
            )
    raise AssertionError(outcome)  # pragma: no cover


async def _repeat(runtime: Runtime, caller: Caller, value: str, fingerprint: str) -> Outcome:
    run_id, _, first = value.partition("|")
    if first != fingerprint:
        raise invalid(
            "Idempotency-Key",
            "this Idempotency-Key was used with a different request body; use a new key for a new run",
        )
    state = await runtime.runs.get(run_id, caller.user_id)
    return Outcome(run_id, state.status if state else "pending", False)


async def cancel_run(runtime: Runtime, caller: Caller, run_id: str) -> RunState:
    """Append RunCancelled (the append script checks owner and phase); idempotent for cancelled runs."""
    if not is_run_id(run_id):
        raise not_found(run_id)
    try:
        await runtime.store.append(
            RunCancelled(run_id=run_id, user_id=caller.user_id, traceparent=current_traceparent())
        )
    except Refused as refused:
        return await _refused_cancel(runtime, caller, run_id, refused)
    state = await runtime.runs.get(run_id, caller.user_id)
    if state is None:  # pragma: no cover - the append just proved it exists
        raise not_found(run_id)
    return state


async def _refused_cancel(runtime: Runtime, caller: Caller, run_id: str, refused: Refused) -> RunState:
    state = await runtime.runs.get(run_id, caller.user_id) if refused.reason is RefusalReason.ENDED else None
    if state is None:
        raise not_found(run_id)
    if state.status == "cancelled":
        return state
    raise Problem(
        409,
        f"Run {run_id} has already ended with status {state.status}; there is nothing to cancel.",
        slug="run-ended",
        extra={"runStatus": state.status},
    )
