"""The event catalogue: one tagged union, encoded once into one stream field.

Every change of a run is one of these. Versions only grow by adding fields with defaults; an
event type this build does not know is skipped and counted, never a crash.
"""

from __future__ import annotations

import typing
from datetime import UTC, datetime
from typing import Any, Literal

import msgspec

from shared.results import Outcome, RunResult, StepOutput, Usage

SCHEMA_VERSION = 1
Priority = Literal["normal", "high"]


def utcnow() -> datetime:
    return datetime.now(UTC)


class RunOptions(msgspec.Struct, frozen=True, kw_only=True):
    debate_rounds: int = 1
    risk_rounds: int = 1
    """Rounds of the aggressive/conservative/neutral risk debate before the portfolio manager."""
    max_tokens: int | None = None
    max_cost_usd: float | None = None
    pipeline: str = "full"
    data_provider: str | None = None
    deadline_s: float | None = None


WebhookEventType = Literal["run.completed", "run.failed", "run.cancelled", "run.timed_out"]
WEBHOOK_EVENT_TYPES: tuple[WebhookEventType, ...] = (
    "run.completed",
    "run.failed",
    "run.cancelled",
    "run.timed_out",
)
DeliveryOutcome = Literal["retrying", "delivered", "dead", "disabled", "refused"]
"""``retrying``: another attempt is scheduled; the rest end the delivery (``disabled``: the
receiver answered 410; ``refused``: the URL's resolved address is not allowed — SSRF)."""


class WebhookSpec(msgspec.Struct, frozen=True, kw_only=True):
    """Where a run's terminal event is delivered. The signing secret is not here: it is kept
    beside the run in Redis (``Keys.webhook_secret``), never in an event."""

    url: str
    events: tuple[WebhookEventType, ...] = WEBHOOK_EVENT_TYPES


class Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    v: int = SCHEMA_VERSION
    run_id: str
    at: datetime = msgspec.field(default_factory=utcnow)
    traceparent: str | None = None


class RunRequested(Event, tag=True, frozen=True, kw_only=True):
    user_id: str
    symbol: str
    model_id: str
    analysts: tuple[str, ...]
    options: RunOptions = RunOptions()
    priority: Priority = "normal"
    idempotency_key: str | None = None
    pipeline: str = "trading"
    """Which registered pipeline runs it (``TT_PIPELINES``); ``trading`` is the built-in one."""
    webhook: WebhookSpec | None = None
    parent_run_id: str | None = None
    """A fork's source run: the run's stream then carries the source's StepCompleted events
    before ``from_step`` (right after this event), which the runner skips as already done."""
    from_step: str | None = None


class RunCancelled(Event, tag=True, frozen=True, kw_only=True):
    user_id: str
    reason: str = "requested by user"


class RunStarted(Event, tag=True, frozen=True, kw_only=True):
    runner_id: str
    attempt: int
    steps: tuple[str, ...]
    queue_wait_s: float = 0.0
    expected_s: float | None = None
    """What runs like this one took before: the basis of the ETA."""


class StepStarted(Event, tag=True, frozen=True, kw_only=True):
    step: str
    index: int
    attempt: int = 1


class StepProgress(Event, tag=True, frozen=True, kw_only=True):
    step: str
    progress: float
    """0 … 1 within the step."""
    message: str = ""


class StepCompleted(Event, tag=True, frozen=True, kw_only=True):
    step: str
    output: StepOutput | None = None
    duration_s: float = 0.0
    usage: Usage = Usage()


class RunRetrying(Event, tag=True, frozen=True, kw_only=True):
    attempt: int
    """The attempt that will resume the run."""
    reason: str = ""


class RunCompleted(Event, tag=True, frozen=True, kw_only=True):
    result: RunResult | None = None
    output: Any = None
    """The final value of a pipeline that is not the built-in one (e.g. a graph's state), as JSON."""
    duration_s: float = 0.0
    usage: Usage = Usage()


class RunFailed(Event, tag=True, frozen=True, kw_only=True):
    code: str
    message: str
    attempt: int = 1
    will_retry: bool = False
    status: Literal["failed", "timeout"] = "failed"


class RunCancellationConfirmed(Event, tag=True, frozen=True, kw_only=True):
    runner_id: str | None = None
    reason: str = "requested by user"
    latency_ms: float | None = None
    """Time from the RunCancelled event to this one, where the runner saw both."""


class WebhookAttempted(Event, tag=True, frozen=True, kw_only=True):
    """One delivery attempt of the run's webhook, appended after its terminal event."""

    webhook_id: str
    """The Standard Webhooks ``webhook-id``: the same on every attempt, so receivers deduplicate."""
    event_type: WebhookEventType
    attempt: int
    outcome: DeliveryOutcome
    status_code: int | None = None
    error: str = ""
    next_attempt_at: datetime | None = None
    endpoint: str | None = None
    """The operator endpoint's name (``TT_WEBHOOK_ENDPOINTS``); None: the run's own webhook."""


class ShareCreated(Event, tag=True, frozen=True, kw_only=True):
    """The owner made a read-only link to the run; only a hash of the link's secret is kept."""

    share_id: str
    user_id: str
    token_sha256: str
    expires_at: datetime | None = None


class ShareRevoked(Event, tag=True, frozen=True, kw_only=True):
    share_id: str
    user_id: str


class OutcomeMeasured(Event, tag=True, frozen=True, kw_only=True):
    """What the price did after a completed run's call, measured once its horizon passed (the
    runners' outcome sweep, on the run's own data provider). ``run_id`` is the measured run.

    Appended to the global log only: the run's own stream refuses events after its end, and its
    meta hash (which the append script checks) has expired long before a horizon of weeks ends.
    The projector folds it into the run's row, current or archived (``shared.outcomes.record``).
    """

    user_id: str
    """The measured run's user: an outcome is recorded only on a run of the same user."""
    outcome: Outcome


ANY_PHASE: tuple[type[Event], ...] = (ShareCreated, ShareRevoked)
"""Event types the owner may append whatever the run's phase (before, during or after its end)."""
AFTER_END: tuple[type[Event], ...] = (WebhookAttempted, *ANY_PHASE)
"""Event types appended after a run's terminal event (bookkeeping that the reducer still folds)."""

AnyEvent = (
    RunRequested
    | RunCancelled
    | RunStarted
    | StepStarted
    | StepProgress
    | StepCompleted
    | RunRetrying
    | RunCompleted
    | RunFailed
    | RunCancellationConfirmed
    | WebhookAttempted
    | ShareCreated
    | ShareRevoked
    | OutcomeMeasured
)
EVENT_TYPES: frozenset[str] = frozenset(t.__name__ for t in typing.get_args(AnyEvent))


def is_terminal(event: Event) -> bool:
    """Whether the event ends its run (nothing is appended after it)."""
    match event:
        case RunCompleted() | RunCancellationConfirmed():
            return True
        case RunFailed(will_retry=will_retry):
            return not will_retry
    return False


class EventError(Exception):
    """An entry that does not hold an event this build can use."""


class UnknownEvent(EventError):
    """A well-formed event of a type (or version) this build does not know: skip and count."""


class MalformedEvent(EventError):
    """Bytes that are not an event at all: log with the entry ID and skip."""


class _TypeOnly(msgspec.Struct):
    type: str


class EventCodec:
    """Encoder and decoder for the event union, built once per component."""

    def __init__(self) -> None:
        self._encoder = msgspec.json.Encoder()
        self._decoder = msgspec.json.Decoder(AnyEvent)
        self._peek = msgspec.json.Decoder(_TypeOnly)

    def encode(self, event: Event) -> bytes:
        return self._encoder.encode(event)

    def decode(self, data: bytes | str) -> AnyEvent:
        try:
            event: AnyEvent = self._decoder.decode(data)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise self._classify(data, exc) from exc
        return event

    def _classify(self, data: bytes | str, exc: Exception) -> EventError:
        try:
            kind = self._peek.decode(data).type
        except (msgspec.ValidationError, msgspec.DecodeError):
            return MalformedEvent(f"not an event: {exc}")
        if kind not in EVENT_TYPES:
            return UnknownEvent(f"unknown event type {kind!r}")
        return MalformedEvent(f"invalid {kind}: {exc}")
