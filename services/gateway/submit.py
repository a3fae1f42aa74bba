"""Turning a validated request into a RunRequested (and a cancel into a RunCancelled)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from opentelemetry import trace

from services.gateway.auth import Caller
from services.gateway.metrics import metrics
from services.gateway.problems import Problem, invalid, not_found
from services.gateway.runtime import Runtime
from services.gateway.schemas import RunRequest
from shared.catalog import PIPELINE_FULL, PIPELINES, TRADING
from shared.events import RunCancelled, RunOptions, RunRequested, WebhookSpec
from shared.ids import is_run_id, new_run_id
from shared.models import unavailable
from shared.run_state import RunState
from shared.store import RefusalReason, Refused
from shared.submits import Capped, Duplicate, Joined, Submitted, Unreplicated
from shared.telemetry import current_traceparent
from shared.webhooks import new_secret

logger = logging.getLogger(__name__)

CAP_RETRY_AFTER_S = 10


@dataclass(frozen=True, slots=True)
class Outcome:
    run_id: str
    status: str
    created: bool
    joined: bool = False
    webhook_secret: str | None = None
    """A secret the gateway generated: answered once, in the response that created the run."""


def _check(runtime: Runtime, caller: Caller, body: RunRequest) -> None:
    """What depends on configuration (the model registry, who may ask for high priority); the
    request model (``schemas.RunRequest``) has checked everything else."""
    if body.model_id not in runtime.models:
        valid = ", ".join(sorted(runtime.models))
        raise invalid(
            "modelId",
            f"unknown model {body.model_id!r}; valid ids: {valid}",
            validModelIds=sorted(runtime.models),
        )
    if body.priority == "high" and not caller.high_priority:
        raise Problem(403, "You may not submit high-priority runs; use priority 'normal'.", field="priority")
    _check_pipeline(runtime, body.pipeline)


def _check_available(runtime: Runtime, model_id: str) -> None:
    """A run naming a model that cannot run here is refused now, not accepted and then failed."""
    reason = unavailable(runtime.models[model_id])
    if reason is not None:
        raise invalid("modelId", f"model {model_id!r} is not available here: {reason}", reason=reason)


# -- pipelines registered with TT_PIPELINES ---------------------------------------------------------


def valid_pipelines(runtime: Runtime) -> list[str]:
    """What ``pipeline`` may name: the built-in analysis's variants and those TT_PIPELINES registers."""
    return [*PIPELINES, TRADING, *runtime.settings.pipelines]


def _check_pipeline(runtime: Runtime, name: str) -> None:
    valid = valid_pipelines(runtime)
    if name not in valid:
        raise invalid(
            "pipeline", f"unknown pipeline {name!r}; valid: {', '.join(valid)}", validPipelines=valid
        )


def _pipeline_of(body: RunRequest) -> tuple[str, str]:
    """(the pipeline that runs it, the built-in one's variant): 'full'/'noop' are the built-in's."""
    if body.pipeline in PIPELINES:
        return TRADING, body.pipeline
    return body.pipeline, PIPELINE_FULL


def _event(caller: Caller, body: RunRequest, idem_key: str | None) -> RunRequested:
    pipeline, variant = _pipeline_of(body)
    options = RunOptions(
        debate_rounds=body.debate_rounds,
        risk_rounds=body.risk_rounds,
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
        webhook=None
        if body.webhook is None
        else WebhookSpec(url=body.webhook.url, events=tuple(dict.fromkeys(body.webhook.events))),
    )


async def submit_run(runtime: Runtime, caller: Caller, body: RunRequest, idem_key: str | None) -> Outcome:
    """Check what configuration decides, rate-limit, then append RunRequested (once per key)."""
    _check(runtime, caller, body)
    _check_available(runtime, body.model_id)
    await runtime.limiter.hit(caller.user_id)
    event = _event(caller, body, idem_key)  # its traceparent is the request's server span
    trace.get_current_span().set_attribute("tickertape.run_id", event.run_id)
    fingerprint = body.fingerprint() if idem_key else ""
    secret = "" if body.webhook is None else (body.webhook.secret or new_secret())
    outcome = await runtime.store.submit(
        event,
        cap=runtime.settings.max_active_runs,
        idempotency=(idem_key, f"{event.run_id}|{fingerprint}") if idem_key else None,
        idempotency_ttl_s=runtime.settings.idempotency_ttl_s,
        join=(body.join_fingerprint(), body.join),
        webhook_secret=secret,
    )
    match outcome:
        case Submitted(run_id=run_id):
            metrics().runs_submitted.labels(body.priority).inc()
            # DEBUG: the RunRequested event already records every submission (user, symbol,
            # traceparent); an INFO line per request would repeat it at the busiest route's rate.
            logger.debug("run submitted", extra={"run_id": run_id, "symbol": body.symbol})
            generated = secret if body.webhook is not None and body.webhook.secret is None else None
            return Outcome(run_id, "pending", True, webhook_secret=generated)
        case Joined(run_id=run_id):
            state = await runtime.runs.get(run_id, caller.user_id)
            return Outcome(run_id, state.status if state else "pending", False, joined=True)
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
        case Unreplicated(run_id=run_id):
            raise Problem(
                503,
                "The run was recorded but no replica confirmed it in time, so it is not yet safe "
                "from a failover. Retry with the same Idempotency-Key to get this run.",
                slug="not-replicated",
                headers={"Retry-After": "1"},
                extra={"runId": run_id} if run_id else None,
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
