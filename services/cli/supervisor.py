"""Keeps `up`'s children running: a child that exits is started again after a backoff.

The delay doubles from the first (0.5 s) to the cap (30 s) while a child keeps dying, and starts
over once it has been healthy for a while. A child that needs more than N restarts within a
window is crash-looping: restarting it further only hides the fault, so everything stops and the
launcher shows its last log lines. A restarted child counts as back only when its health check
names the new pid. Children are started from the caller's (main) thread, which their parent-death
signal is tied to.
"""

from __future__ import annotations

import enum
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from services.cli.processes import Console, Process
from services.cli.settings import LaunchSettings

TICK_S = 0.2


@dataclass
class RestartPolicy:
    """When to start a dead child again, or that it is crash-looping (a pure clock calculation)."""

    first_s: float
    max_s: float
    limit: int
    window_s: float
    streak: int = 0
    restarts: deque[float] = field(default_factory=deque)

    @classmethod
    def from_settings(cls, s: LaunchSettings) -> RestartPolicy:
        return cls(s.restart_backoff_s, s.restart_backoff_max_s, s.crash_loop_restarts, s.crash_loop_window_s)

    def next_delay(self, now: float) -> float | None:
        """The backoff before the next start; None when that start would be one too many."""
        while self.restarts and now - self.restarts[0] > self.window_s:
            self.restarts.popleft()
        if len(self.restarts) >= self.limit:
            return None
        self.restarts.append(now)
        delay = min(self.first_s * 2.0**self.streak, self.max_s)
        self.streak += 1
        return delay

    def settled(self) -> None:
        """The child stayed healthy long enough: the next death waits the first delay again."""
        self.streak = 0


class State(enum.Enum):
    STARTING = "starting"
    UP = "up"
    WAITING = "waiting to restart"


@dataclass
class Slot:
    """One supervised child, its policy and where it is in its life."""

    process: Process
    policy: RestartPolicy
    state: State = State.UP
    since: float = field(default_factory=time.monotonic)
    restart_at: float = 0.0

    def enter(self, state: State, now: float) -> None:
        self.state, self.since = state, now


class CrashLoop(Exception):
    """A child died more often than the policy allows; ``slot`` names it."""

    def __init__(self, slot: Slot, window_s: float) -> None:
        super().__init__(
            f"{slot.process.name} is crash-looping ({slot.policy.limit} restarts within "
            f"{window_s:g} s): stopping everything"
        )
        self.slot = slot


class Supervisor:
    """Watches running children until ``stopping`` is set; restarts them or raises `CrashLoop`."""

    def __init__(self, settings: LaunchSettings, console: Console, stopping: threading.Event) -> None:
        self.settings = settings
        self.console = console
        self.stopping = stopping
        self.slots: list[Slot] = []
        self.clock: Callable[[], float] = time.monotonic

    def adopt(self, processes: Sequence[Process]) -> None:
        """Supervise children that were started and found healthy."""
        now = self.clock()
        for process in processes:
            self.slots.append(Slot(process, RestartPolicy.from_settings(self.settings), State.UP, now))

    def run(self) -> None:
        while not self.stopping.wait(TICK_S):
            now = self.clock()
            for slot in self.slots:
                self._tick(slot, now)

    def _tick(self, slot: Slot, now: float) -> None:
        process = slot.process
        if slot.state is State.WAITING:
            if now >= slot.restart_at and not self.stopping.is_set():
                process.start()
                self.console.say(f"restarted {process.name} (pid {process.pid})")
                slot.enter(State.STARTING, now)
            return
        code = process.exit_code()
        if code is not None:
            self._died(slot, now, f"exited (code {code})")
        elif slot.state is State.STARTING:
            self._check_start(slot, now)
        elif now - slot.since >= self.settings.restart_reset_s:
            slot.policy.settled()

    def _check_start(self, slot: Slot, now: float) -> None:
        if slot.process.healthy():
            self.console.say(f"{slot.process.name} is back (pid {slot.process.pid})")
            slot.enter(State.UP, now)
        elif now - slot.since > self.settings.health_timeout_s:
            slot.process.terminate()
            slot.process.wait_or_kill(self.clock() + self.settings.grace_s)
            self._died(slot, now, "did not answer its health check in time")

    def _died(self, slot: Slot, now: float, how: str) -> None:
        delay = slot.policy.next_delay(now)
        if delay is None:
            self.console.say(f"{slot.process.name} {how}")
            raise CrashLoop(slot, self.settings.crash_loop_window_s)
        self.console.say(f"{slot.process.name} {how}: restarting in {delay:g} s")
        slot.restart_at = now + delay
        slot.enter(State.WAITING, now)
