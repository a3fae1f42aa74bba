"""The delta between two views of a run's state, and merging one into the last full view.

An SSE stream sends the full state view on a client's first event, at a reset and with the
terminal event; every other event carries ``delta(before, after)``: the top-level fields whose
value changed and, under ``steps``, only the steps that changed (each whole, matched by
``name``). Where the list of steps itself changes (steps added, dropped or reordered) there is
no delta: the full state is sent. ``merge(before, delta(before, after)) == after`` whenever the
delta exists, so a client that folds deltas into its last full state holds exactly the state the
server holds.
"""

from __future__ import annotations

from typing import Any

Json = dict[str, Any]
STEPS = "steps"
STEP_KEY = "name"


def delta(before: Json, after: Json) -> Json | None:
    """What changed from ``before`` to ``after`` (both state views); None: send ``after`` whole."""
    old_steps, new_steps = before.get(STEPS) or [], after.get(STEPS) or []
    if [s.get(STEP_KEY) for s in old_steps] != [s.get(STEP_KEY) for s in new_steps]:
        return None
    changed = {k: v for k, v in after.items() if k != STEPS and before.get(k, _MISSING) != v}
    steps = [new for old, new in zip(old_steps, new_steps, strict=True) if old != new]
    if steps:
        changed[STEPS] = steps
    return changed


def merge(before: Json, change: Json) -> Json:
    """``before`` with ``change`` (a ``delta``) applied: a new view, ``before`` untouched."""
    merged = {**before, **{k: v for k, v in change.items() if k != STEPS}}
    if STEPS in change:
        merged[STEPS] = _merged_steps(before.get(STEPS) or [], change[STEPS])
    return merged


def _merged_steps(before: list[Json], changed: list[Json]) -> list[Json]:
    updates = {s.get(STEP_KEY): s for s in changed}
    return [updates.get(s.get(STEP_KEY), s) for s in before]


class _Missing:
    pass


_MISSING = _Missing()
