"""Outcomes of past calls, read from the later runs that measured them (pure; no I/O).

Two events carry outcomes. A completed run's result carries ``memory``: the earlier calls on its
symbol it was shown, each scored on its own data (run id, realised return, whether it went the
call's way). And once a run's horizon has passed, a runner's outcome sweep measures its call on the
run's own data provider and appends ``OutcomeMeasured``, so a run no later run followed gets its
outcome too. These events are the only record of an outcome: the read model folds them into the
measured run's row (``record``), so the history shows it and a rebuild from the log gives the same
rows.
"""

from __future__ import annotations

from datetime import datetime

from shared.events import OutcomeMeasured, RunCompleted
from shared.results import Outcome, PastCall
from shared.run_state import RunState


def outcome_of(call: PastCall, at: datetime) -> Outcome | None:
    """The outcome a scored call states, observed ``at``; None while no close followed it."""
    if call.realised_return is None:
        return None
    return Outcome(
        realised_return=call.realised_return,
        correct=call.hit,
        horizon_days=call.horizon_days,
        demo=call.demo,
        horizon_ended=call.horizon_ended,
        observed_at=at,
    )


def observed(event: RunCompleted, user_id: str) -> list[tuple[str, str, Outcome]]:
    """(earlier run id, the measuring run's user, the outcome) for each scored call in the
    completed run's memory."""
    if event.result is None:
        return []
    found = [(call.run_id, outcome_of(call, event.at)) for call in event.result.memory]
    return [(run_id, user_id, o) for run_id, o in found if o is not None and run_id != event.run_id]


def swept(event: OutcomeMeasured) -> tuple[str, str, Outcome]:
    """(measured run id, its user, the outcome) of an outcome sweep's measurement."""
    return event.run_id, event.user_id, event.outcome


def record(state: RunState, outcome: Outcome, by_user: str) -> bool:
    """Record ``outcome``, measured by a run of ``by_user``, on a finished run's ``state``; whether
    it changed.

    Only a run of the same user measures a call (the desk's memory is per user; a pipeline's
    result naming another user's run id changes nothing). The latest observation wins (a later
    run has seen more closes), except that one measured before the horizon ended never replaces
    one measured after it.
    """
    if state.status != "completed" or state.user_id != by_user or state.outcome == outcome:
        return False
    if state.outcome is not None and state.outcome.horizon_ended and not outcome.horizon_ended:
        return False
    state.outcome = outcome
    return True
