"""Admission control: a runner takes new work only while it has free slots and can keep its leases.

A lease is kept by a renewal every ``lease_renew_s``; it lapses when a renewal comes later than
the lease. What delays a renewal is the process itself: an event loop busy with too many runs,
and the renewal's round trip. So the runner measures both — the loop's lag by a probe every
``PROBE_S``, the round trip by each renewal — and reads no new work (nor takes over runs) while
their sum is above ``PRESSURE_FRACTION`` of the slack a lease leaves after its renewal interval.
Work is admitted ``ADMIT_STEP`` entries per read, so the pressure of what was admitted shows
before more is: a burst of 1,000 queued runs ramps up instead of arriving at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator, Sized

from services.runner.metrics import metrics

PROBE_S = 0.05
"""How often the event loop's lag is sampled (and how long a refused read waits to ask again)."""
PRESSURE_FRACTION = 0.25
"""Of (lease - renewal interval): the pressure above which no new work is admitted."""
ADMIT_STEP = 100
"""Entries admitted per read at most; the next read comes after a lag sample of this load."""
_DECAY = 0.8
"""Per probe: a lag spike is remembered for a few probes, so one quiet sample admits nothing."""


class Admission:
    """Free slots and lease pressure of one runner process."""

    def __init__(self, concurrency: int, lease_s: float, renew_s: float, held: Sized) -> None:
        self.concurrency = concurrency
        self.limit_s = (lease_s - renew_s) * PRESSURE_FRACTION
        self.held = held
        self.asked = 0
        """Entries asked of Redis by reads and claims still in flight: their slots are taken."""
        self.loop_lag_s = 0.0
        self.renewal_s = 0.0
        self.freed = asyncio.Event()

    @property
    def free(self) -> int:
        """Slots neither held nor promised to a read or claim in flight (the read loop and the
        claim loop run side by side: each must not count a slot the other's request may fill)."""
        return self.concurrency - len(self.held) - self.asked

    @property
    def pressure_s(self) -> float:
        """How late the next lease renewal may come: loop lag plus the last renewal's round trip."""
        return self.loop_lag_s + self.renewal_s

    @property
    def open(self) -> bool:
        return self.pressure_s < self.limit_s

    def allowance(self) -> int:
        """How many entries one read or claim may take now."""
        return min(self.free, ADMIT_STEP) if self.open else 0

    async def wait(self) -> None:
        """Until a slot is free and the leases are safe."""
        while True:
            if self.free <= 0:
                self.freed.clear()
                await self.freed.wait()
            elif not self.open:
                await asyncio.sleep(PROBE_S)
            else:
                return

    @contextlib.contextmanager
    def asking(self, count: int) -> Iterator[int]:
        """Promise ``count`` slots to one request; what it brings is held before they are
        given back (the dispatch runs right after it, with no await in between), and whoever
        waits for a slot is woken then."""
        self.asked += count
        try:
            yield count
        finally:
            self.asked -= count
            if count:
                self.freed.set()  # what the request did not fill is free again

    def renewed(self, took_s: float) -> None:
        """Record a renewal round's time, from when it was due to its reply."""
        self.renewal_s = took_s
        metrics().lease_pressure.set(self.pressure_s)

    async def probe(self) -> None:
        """Sample the event loop's lag until cancelled."""
        while True:
            began = time.monotonic()
            await asyncio.sleep(PROBE_S)
            lag = max(time.monotonic() - began - PROBE_S, 0.0)
            self.loop_lag_s = max(lag, self.loop_lag_s * _DECAY)
            metrics().lease_pressure.set(self.pressure_s)
