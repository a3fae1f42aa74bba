"""The delta between two views of a run's state, and merging one into the last full view.

An SSE stream sends the full state view on a client's first event, on the run's first and at a
reset; every other event, the terminal one included, carries ``delta(before, after)``: the
top-level fields whose value changed and, under ``steps``, only the steps that changed, each as
its ``name`` and the fields of it that changed. Where the list of steps itself changes (steps
added, dropped or reordered) there is no delta: the full state is sent. ``lastEventId`` is left
out: it is the message's own ``id:``. ``merge(before, delta(before, after), after["lastEventId"])
== after`` whenever the delta exists, so a client that folds deltas into its last full state
holds exactly the state the server holds.
"""

from __future__ import annotations

from typing import Any

Json = dict[str, Any]
STEPS = "steps"
STEP_KEY = "name"
LAST_EVENT_ID = "lastEventId"


def delta(before: Json, after: Json) -> Json | None:
    """What changed from ``before`` to ``after`` (both state views); None: send ``after`` whole."""
    old_steps, new_steps = before.get(STEPS) or [], after.get(STEPS) or []
    if [s.get(STEP_KEY) for s in old_steps] != [s.get(STEP_KEY) for s in new_steps]:
        return None
    changed = {k: v for k, v in _changed(before, after).items() if k not in (STEPS, LAST_EVENT_ID)}
    steps = [
        {STEP_KEY: new[STEP_KEY], **_changed(old, new)}
        for old, new in zip(old_steps, new_steps, strict=True)
        if old != new
    ]
    if steps:
        changed[STEPS] = steps
    return changed


def merge(before: Json, change: Json, event_id: str) -> Json:
    """``before`` with ``change`` (the delta of event ``event_id``) applied: a new view."""
    merged = {**before, **{k: v for k, v in change.items() if k != STEPS}, LAST_EVENT_ID: event_id}
    if STEPS in change:
        merged[STEPS] = _merged_steps(before.get(STEPS) or [], change[STEPS])
    return merged


def _changed(before: Json, after: Json) -> Json:
    """The fields of ``after`` whose value differs from ``before``'s."""
    return {k: v for k, v in after.items() if before.get(k, _MISSING) != v}


def _merged_steps(before: list[Json], changed: list[Json]) -> list[Json]:
    updates = {s.get(STEP_KEY): s for s in changed}
    return [{**s, **updates[s.get(STEP_KEY)]} if s.get(STEP_KEY) in updates else s for s in before]


class _Missing:
    pass


_MISSING = _Missing()
