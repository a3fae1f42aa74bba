"""The one pure fold of a run's events into its state.

The projector persists it, the gateway answers with it before the projection catches up and
attaches it to every SSE message, and the runner replays it to resume. No I/O here; the state
types it folds into live in ``shared.run_state``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

import msgspec

from shared.catalog import TRADING, planned_steps, step_label
from shared.events import (
    AFTER_END,
    AnyEvent,
    Event,
    RunCancellationConfirmed,
    RunCancelled,
    RunCompleted,
    RunFailed,
    RunRequested,
    RunRetrying,
    RunStarted,
    ShareCreated,
    ShareRevoked,
    StepCompleted,
    StepProgress,
    StepStarted,
    WebhookAttempted,
)
from shared.results import (
    AnalystReport,
    Assessment,
    Debate,
    JsonOutput,
    MarketData,
    RiskDebate,
    StepOutput,
    TradeProposal,
)
from shared.run_state import (
    TERMINAL,
    DeliveryState,
    ErrorInfo,
    RunState,
    ShareState,
    Status,
    StepState,
    StepStatus,
    initial,
)


def fold(run_id: str, entries: Iterable[tuple[str, AnyEvent]]) -> RunState:
    """The state after applying every (stream ID, event) in order."""
    return fold_onto(initial(run_id), entries)


def fold_onto(state: RunState, entries: Iterable[tuple[str, AnyEvent]]) -> RunState:
    """``state`` (left untouched) after the events that followed it, in order."""
    for event_id, event in entries:
        state = apply(state, event, event_id)
    return state


def apply(state: RunState, event: AnyEvent, event_id: str) -> RunState:
    """The state after one event; the input is left untouched."""
    new = msgspec.structs.replace(
        state, steps=[_copy(s) for s in state.steps], deliveries=_copy_deliveries(state)
    )
    new.last_event_id = event_id
    new.event_count += 1
    new.updated_at = event.at
    if state.terminal:
        if isinstance(event, AFTER_END):
            _mutate(new, event)  # deliveries of its webhook, folded beside the finished run
        return new  # nothing else changes a finished run; later entries are bookkeeping only
    _mutate(new, event)
    _derive_progress(new, event.at)
    return new


def apply_mut(state: RunState, event: AnyEvent, event_id: str) -> None:
    """Apply one event to ``state`` in place: ``apply`` without the copy, for a writer that owns it.

    After it, ``state`` equals what ``apply`` would have returned; ``apply`` and ``fold`` stay the
    reference (kept separate on purpose, so tests/projector/test_apply_mut.py compares two paths).
    """
    state.last_event_id = event_id
    state.event_count += 1
    state.updated_at = at = event.at
    if state.status in TERMINAL:
        if isinstance(event, AFTER_END):
            _mutate(state, event)  # deliveries of its webhook, folded beside the finished run
        return  # nothing else changes a finished run; later entries are bookkeeping only
    handler = _HANDLERS.get(type(event))  # _mutate, one call less on the projector's hot path
    if handler is None:
        _mutate(state, event)
    else:
        handler(state, event)
    _derive_progress(state, at)


def _mutate(s: RunState, event: AnyEvent) -> None:
    handler = _HANDLERS.get(type(event))
    if handler is None:  # a subclass of an event type: the first type it is an instance of
        handler = next((h for kind, h in _HANDLERS.items() if isinstance(event, kind)), None)
    if handler is not None:
        handler(s, event)


def _step_progress(s: RunState, e: StepProgress) -> None:
    st = _step(s, e.step)
    st.status, st.progress, st.message = "running", _clamp(e.progress), e.message
    s.current_step, s.message = e.step, e.message


def _retrying(s: RunState, e: RunRetrying) -> None:
    _back_to_queue(s, e.attempt, e.reason)


def _failed(s: RunState, e: RunFailed) -> None:
    if e.will_retry is True:  # True itself, not any truthy value
        s.error = ErrorInfo(code=e.code, message=e.message)
        _back_to_queue(s, e.attempt + 1, e.message)
    else:
        _finish(s, e, e.status)
        s.error = ErrorInfo(code=e.code, message=e.message)


def _completed(s: RunState, e: RunCompleted) -> None:
    _finish(s, e, "completed")
    s.result, s.output = e.result, e.output
    s.demo = e.result.demo if e.result is not None else s.demo
    s.usage = e.usage if e.usage.calls else s.usage


def _confirmed(s: RunState, e: RunCancellationConfirmed) -> None:
    _finish(s, e, "cancelled")
    s.error = ErrorInfo(code="cancelled", message=e.reason)


def _requested(s: RunState, e: RunRequested) -> None:
    s.user_id, s.symbol, s.model_id = e.user_id, e.symbol, e.model_id
    s.analysts, s.options, s.priority = e.analysts, e.options, e.priority
    s.requested_at, s.pipeline = e.at, e.pipeline
    s.webhook, s.parent_run_id, s.from_step = e.webhook, e.parent_run_id, e.from_step
    s.steps = [StepState(name=n, label=_label(n)) for n in planned_steps(e)]


def _webhook_attempted(s: RunState, e: WebhookAttempted) -> None:
    found = next((d for d in s.deliveries if d.webhook_id == e.webhook_id), None)
    if found is None:
        found = DeliveryState(webhook_id=e.webhook_id, event_type=e.event_type, endpoint=e.endpoint)
        s.deliveries = [*s.deliveries, found]
    found.status, found.attempts, found.status_code = e.outcome, max(found.attempts, e.attempt), e.status_code
    found.error, found.last_attempt_at, found.next_attempt_at = e.error, e.at, e.next_attempt_at


def _share_created(s: RunState, e: ShareCreated) -> None:
    share = ShareState(
        share_id=e.share_id, token_sha256=e.token_sha256, created_at=e.at, expires_at=e.expires_at
    )
    s.shares = [*s.shares, share]


def _share_revoked(s: RunState, e: ShareRevoked) -> None:
    s.shares = [
        msgspec.structs.replace(sh, revoked_at=sh.revoked_at or e.at) if sh.share_id == e.share_id else sh
        for sh in s.shares
    ]


def _started(s: RunState, e: RunStarted) -> None:
    s.status, s.attempt, s.runner_id = "running", e.attempt, e.runner_id
    s.started_at = s.started_at or e.at
    s.queue_wait_s = s.queue_wait_s if s.queue_wait_s is not None else e.queue_wait_s
    s.expected_s = e.expected_s
    known = {st.name: st for st in s.steps}
    planned = [known.get(n) or StepState(name=n, label=_label(n)) for n in e.steps]
    # The runner's plan replaces the request's; a graph's steps appear as it runs, so those an
    # earlier attempt reported (not merely planned) stay.
    s.steps = planned + [st for st in s.steps if st.name not in e.steps and st.status != "pending"]
    s.message = "started" if e.attempt == 1 else f"resumed (attempt {e.attempt})"


def _step_started(s: RunState, e: StepStarted) -> None:
    step = e.step
    st = _step(s, step)
    st.status, st.progress, st.message = "running", 0.0, ""
    st.started_at, st.attempt = e.at, e.attempt
    s.current_step, s.message = step, f"{st.label} started"


def _step_completed(s: RunState, e: StepCompleted) -> None:
    st = _step(s, e.step)
    st.status, st.progress, st.completed_at = "completed", 1.0, e.at
    st.duration_s, st.usage = e.duration_s, st.usage + e.usage
    st.message = _describe(e.output)
    if isinstance(e.output, MarketData):
        s.demo = e.output.demo
    s.usage = s.usage + e.usage
    s.message = f"{st.label} done"


def _back_to_queue(s: RunState, attempt: int, reason: str) -> None:
    s.status, s.attempt, s.runner_id = "pending", max(s.attempt, attempt - 1), None
    s.message = f"waiting to resume: {reason}" if reason else "waiting to resume"
    for st in s.steps:
        if st.status == "running":
            st.status, st.message = "pending", "interrupted"


def _cancelled(s: RunState, e: RunCancelled) -> None:
    if s.status == "pending":  # never started (or released): no runner to confirm it
        _finish(s, e, "cancelled")
        s.error = ErrorInfo(code="cancelled", message=e.reason)
    else:
        s.cancel_requested = True
        s.message = "cancelling"


def _finish(s: RunState, e: Event, status: Status) -> None:
    s.status, s.completed_at = status, e.at
    s.eta_s = 0.0
    if s.started_at is not None:
        s.duration_s = round((e.at - s.started_at).total_seconds(), 3)
    mark: StepStatus = "failed" if status in ("failed", "timeout") else "cancelled"
    for st in s.steps:
        if st.status == "running":
            st.status = mark if status != "completed" else "completed"
    s.current_step = None
    s.message = status


def _derive_progress(s: RunState, now: datetime) -> None:
    status = s.status
    if status == "completed":
        s.progress = 100.0
        return
    steps = s.steps
    if not steps:
        return
    done: float = 0  # the sum, in step order, of a running step's progress and 1 per completed one
    for st in steps:
        step_status = st.status
        if step_status == "running":
            done += st.progress
        elif step_status == "completed":
            done += 1
    # a graph's next step is not known yet: count one more, so it never shows 100 % early
    fraction = done / (len(steps) + (s.pipeline != TRADING))
    s.progress = round(100.0 * fraction, 1)
    if status != "running" or s.started_at is None:
        return  # "running" is neither terminal nor pending
    elapsed = (now - s.started_at).total_seconds()
    if s.expected_s:
        s.eta_s = round(max(s.expected_s - elapsed, s.expected_s * (1 - fraction) * 0.25), 1)
    elif fraction > 0:
        s.eta_s = round(elapsed / fraction * (1 - fraction), 1)


def _step(s: RunState, name: str) -> StepState:
    for st in s.steps:
        if st.name == name:
            return st
    st = StepState(name=name, label=_label(name))
    s.steps.append(st)
    return st


_HANDLERS: dict[type, Callable[[RunState, Any], None]] = {
    RunRequested: _requested,
    RunStarted: _started,
    StepStarted: _step_started,
    StepProgress: _step_progress,
    StepCompleted: _step_completed,
    RunRetrying: _retrying,
    RunFailed: _failed,
    RunCompleted: _completed,
    RunCancelled: _cancelled,
    RunCancellationConfirmed: _confirmed,
    WebhookAttempted: _webhook_attempted,
    ShareCreated: _share_created,
    ShareRevoked: _share_revoked,
}
"""What each event type does to a state (the order is the one a subclass is matched in)."""


def _copy(st: StepState) -> StepState:
    return msgspec.structs.replace(st)


def _copy_deliveries(state: RunState) -> list[DeliveryState]:
    return [msgspec.structs.replace(d) for d in state.deliveries]


_label = functools.lru_cache(maxsize=1024)(step_label)
"""``step_label`` (pure, over a constant catalogue), remembered: every run names the same steps."""


def _clamp(value: float) -> float:
    return min(max(value, 0.0), 1.0)


def _describe(output: StepOutput | None) -> str:
    if output is None:
        return ""
    match output:
        case MarketData(prices=prices, provider=provider, demo=demo, listed=listed):
            label = " (demo data)" if demo and listed else " (demo data, no real market)" if demo else ""
            return f"{len(prices.close)} daily bars from {provider}{label}"
        case AnalystReport(summary=summary) | Debate(summary=summary):
            return summary
        case TradeProposal(action=action, entry=entry):
            return f"{action} at {entry:.2f}"
        case RiskDebate(prevailing=prevailing, position_pct=size):
            return f"the {prevailing} voice prevails" + (
                f", position {size:.1f}%" if size is not None else ""
            )
        case Assessment(decision=decision, rating=rating, confidence=confidence):
            return f"{decision} ({rating}, confidence {confidence:.0%})"
        case JsonOutput(value=value):
            text = value if isinstance(value, str) else msgspec.json.encode(value).decode()
            return text if len(text) <= 200 else text[:199] + "…"
    return ""
