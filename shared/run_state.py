"""A run's state as the fold of its events leaves it (``shared.reducer`` computes it).

The types every reader of a run shares: the projector stores them, the gateway answers with them,
the runner and the CLI read them. No behaviour beyond the two status tests.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import msgspec

from shared.catalog import TRADING
from shared.events import RunOptions, WebhookSpec
from shared.results import Outcome, RunResult, Usage

Status = Literal["pending", "running", "completed", "failed", "timeout", "cancelled"]
StepStatus = Literal["pending", "running", "completed", "failed", "cancelled"]
TERMINAL: frozenset[str] = frozenset({"completed", "failed", "timeout", "cancelled"})
ACTIVE: frozenset[str] = frozenset({"pending", "running"})
STATUSES: tuple[str, ...] = ("pending", "running", "completed", "failed", "timeout", "cancelled")


class StepState(msgspec.Struct, kw_only=True):
    name: str
    label: str
    status: StepStatus = "pending"
    progress: float = 0.0
    message: str = ""
    started_at: datetime | None = None
    completed_at: datetime | None = None
    duration_s: float | None = None
    attempt: int = 0
    usage: Usage = Usage()
    """The LLM calls of this step (the run's ``usage`` is their sum, or the runner's total)."""


class ErrorInfo(msgspec.Struct, frozen=True, kw_only=True):
    code: str
    message: str


class DeliveryState(msgspec.Struct, kw_only=True):
    """A webhook delivery as its attempts tell it (``status`` is the last attempt's outcome)."""

    webhook_id: str
    event_type: str
    endpoint: str | None = None
    """The operator endpoint's name; None: the run's own webhook."""
    status: str = "retrying"
    attempts: int = 0
    status_code: int | None = None
    error: str = ""
    last_attempt_at: datetime | None = None
    next_attempt_at: datetime | None = None


class ShareState(msgspec.Struct, kw_only=True):
    share_id: str
    token_sha256: str
    created_at: datetime
    expires_at: datetime | None = None
    revoked_at: datetime | None = None


class RunState(msgspec.Struct, kw_only=True):
    """Everything known about one run after folding its events."""

    run_id: str
    user_id: str = ""
    symbol: str = ""
    model_id: str = ""
    analysts: tuple[str, ...] = ()
    options: RunOptions = RunOptions()
    priority: str = "normal"
    pipeline: str = TRADING
    status: Status = "pending"
    attempt: int = 0
    runner_id: str | None = None
    steps: list[StepState] = []
    current_step: str | None = None
    message: str = ""
    progress: float = 0.0
    """Percent, 0 … 100."""
    eta_s: float | None = None
    expected_s: float | None = None
    result: RunResult | None = None
    output: Any = None
    """The final JSON value of a pipeline other than the built-in one."""
    error: ErrorInfo | None = None
    cancel_requested: bool = False
    requested_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    updated_at: datetime | None = None
    duration_s: float | None = None
    queue_wait_s: float | None = None
    usage: Usage = Usage()
    last_event_id: str = ""
    event_count: int = 0
    webhook: WebhookSpec | None = None
    deliveries: list[DeliveryState] = []
    shares: list[ShareState] = []
    parent_run_id: str | None = None
    from_step: str | None = None
    demo: bool | None = None
    """Whether the run's data is demo (synthetic) data; None until its data step says."""
    outcome: Outcome | None = None
    """What the price did after the call, as a later run measured it: the read model sets it
    (``shared.outcomes``), a fold of the run's own events never does."""

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def active(self) -> bool:
        return self.status in ACTIVE


def initial(run_id: str) -> RunState:
    return RunState(run_id=run_id)
