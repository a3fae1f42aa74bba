"""Loaded at interpreter start when this folder is on PYTHONPATH: a process whose wall clock is
``TT_TEST_CLOCK_SKEW_S`` seconds off (time.time and the events' ``utcnow``), the clock double for
the clock-skew chaos tests. Monotonic clocks stay true, as they do on a skewed machine."""

from __future__ import annotations

import os
import time
from datetime import timedelta

_SKEW_S = float(os.environ.get("TT_TEST_CLOCK_SKEW_S", "0") or 0)

if _SKEW_S:
    _real_time, _real_time_ns = time.time, time.time_ns
    time.time = lambda: _real_time() + _SKEW_S
    time.time_ns = lambda: _real_time_ns() + int(_SKEW_S * 1e9)

    import shared.events as _events

    _events.__dict__["_TEST_CLOCK_SKEW"] = timedelta(seconds=_SKEW_S)

    def _skewed_utcnow():  # type: ignore[no-untyped-def]
        return datetime.now(UTC) + _TEST_CLOCK_SKEW  # type: ignore[name-defined]  # noqa: F821

    # The events' default factory and every ``from shared.events import utcnow`` hold this very
    # function object: swap its code, and its globals (shared.events') resolve the names above.
    _events.utcnow.__code__ = _skewed_utcnow.__code__
