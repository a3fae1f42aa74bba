"""Request bodies (strict: unknown fields and wrong types are refused) and JSON views of state."""

from __future__ import annotations

import functools
import hashlib
import json
from typing import Annotated, Any, Literal

import msgspec
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
)

from shared.catalog import ANALYST_IDS, PIPELINES, DataProvider
from shared.events import WEBHOOK_EVENT_TYPES, WebhookEventType
from shared.run_state import RunState

SYMBOL_PATTERN = r"^[A-Za-z0-9^][A-Za-z0-9.\-^=]*$"
"""Tickers such as AAPL, BRK.B, ^GSPC, EURUSD=X, BTC-USD; never '.', '..' or a leading '-'/'='
(a symbol names a CSV file for the csv provider: it must not be able to name a directory)."""
IDEMPOTENCY_KEY_PATTERN = r"^[\x21-\x7e]{1,200}$"
"""1-200 visible ASCII characters, no spaces: the key is part of a Redis key name."""
_PORT = r"(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4})"
WEBHOOK_URL_PATTERN = rf"^https?://[A-Za-z0-9](?:[A-Za-z0-9.\-]*[A-Za-z0-9])?(?::{_PORT})?(?:/[!-~]*)?$"
"""http(s), a host name or IPv4 address, a port, a path: what ``shared.webhooks.split_url`` parses."""


def _known_analyst(value: str) -> str:
    if value not in ANALYST_IDS:
        raise ValueError(f"{value!r} is not an analyst; choose from {', '.join(ANALYST_IDS)}")
    return value


def _integral(value: object) -> object:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


Integral = BeforeValidator(_integral)
"""After an int's bounds: an integer as JSON Schema means it (``2.0`` is one), while ``"2"`` and
``1.5`` stay refused. (Before the bounds, pydantic would publish them as unknown keywords.)"""
AnalystId = Annotated[
    str, AfterValidator(_known_analyst), Field(json_schema_extra={"enum": list(ANALYST_IDS)})
]
Symbol = Annotated[
    str,
    StringConstraints(to_upper=True, min_length=1, max_length=10, pattern=SYMBOL_PATTERN),
]


class WebhookRequest(BaseModel):
    """Where to deliver the run's terminal event (Standard Webhooks 1.0; docs/webhooks.md)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    url: str = Field(
        max_length=2000,
        pattern=WEBHOOK_URL_PATTERN,
        description="https URL; http, and private or loopback addresses, only for TT_WEBHOOK_ALLOWED_HOSTS "
        "(checked on the resolved address at delivery)",
    )
    events: list[WebhookEventType] = Field(
        default_factory=lambda: list(WEBHOOK_EVENT_TYPES),
        min_length=1,
        json_schema_extra={"uniqueItems": True},
    )
    secret: str | None = Field(
        None,
        pattern=r"^whsec_(?:[A-Za-z0-9+/]{4}){8,16}(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$",
        description="whsec_ + base64 of 24-64 bytes; without it one is generated and answered once",
    )


class RunRequest(BaseModel):
    """What a client may ask for; anything else in the body is refused."""

    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=False, frozen=True)

    symbol: Symbol = Field(
        description="Ticker, 1-10 of A-Z 0-9 . - ^ = starting with a letter, digit or ^ (upper-cased)",
        examples=["AAPL"],
    )
    analysts: list[AnalystId] = Field(
        min_length=1, max_length=len(ANALYST_IDS), json_schema_extra={"uniqueItems": True}
    )
    model_id: str = Field("offline", alias="modelId", min_length=1, max_length=100)
    priority: Literal["normal", "high"] = "normal"
    debate_rounds: Annotated[int, Field(ge=0, le=5), Integral] = Field(1, alias="debateRounds")
    risk_rounds: Annotated[int, Field(ge=1, le=5), Integral] = Field(
        1, alias="riskRounds", description="Rounds of the aggressive/conservative/neutral risk debate"
    )
    max_tokens: Annotated[int, Field(ge=1, le=10_000_000), Integral] | None = Field(None, alias="maxTokens")
    max_cost_usd: float | None = Field(None, alias="maxCostUsd", gt=0, le=1000, allow_inf_nan=False)
    pipeline: str = Field(
        "full",
        min_length=1,
        max_length=64,
        description="'full' or 'noop' (the built-in analysis), or a pipeline GET /pipelines lists",
    )
    data_provider: DataProvider | None = Field(None, alias="dataProvider")
    join: bool = Field(
        True,
        description="an identical request of yours that is pending or running answers that run "
        "(200, joined: true); false always starts a new run",
    )
    webhook: WebhookRequest | None = None

    @field_validator("analysts")
    @classmethod
    def _no_duplicates(cls, value: list[str]) -> list[str]:
        seen = [a for i, a in enumerate(value) if a in value[:i]]
        if seen:
            raise ValueError(f"analyst {seen[0]!r} is listed twice")
        return value

    def fingerprint(self) -> str:
        """SHA-256 of the canonical (validated, normalised) request: what idempotency compares.
        A webhook's secret is left out: no hash of a secret is stored."""
        return _digest(self._dump())

    def join_fingerprint(self) -> str:
        """What makes two requests "the same run" for joining: everything but ``join`` itself
        (analysts are a set here: their order does not change the analysis's result)."""
        return _digest(self._dump() | {"join": True, "analysts": sorted(self.analysts)})

    def _dump(self) -> dict[str, Any]:
        dump = self.model_dump(by_alias=True)
        if dump.get("webhook"):
            dump["webhook"].pop("secret", None)
        return dump


def _digest(dump: dict[str, Any]) -> str:
    canonical = json.dumps(dump, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


assert set(PIPELINES) == {"full", "noop"}


class SessionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    # An API token, or a JWT: Supabase and OIDC access tokens run to a few kilobytes.
    token: str = Field(min_length=1, max_length=8192)


class Accepted(BaseModel):
    runId: str
    status: str
    joined: bool = Field(False, description="true: an identical run of yours was running; this is it")
    webhookSecret: str | None = Field(None, description="the generated webhook secret, answered only once")


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


_camel_of = functools.lru_cache(maxsize=4096)(camel)
"""``camel`` for ``camelize``, whose keys are field names (a few hundred): the SSE hub renders a
run's whole state on every event it follows, and the split-and-join per key was most of it."""


_OPAQUE = frozenset({"evidence", "output", "value"})
"""Maps whose keys are data, not field names: left as they are."""


def camelize(value: Any) -> Any:
    # Most values are scalars (a price series is hundreds of numbers): no call for those.
    if isinstance(value, dict):
        return {
            _camel_of(k): camelize(v) if isinstance(v, _NESTED) and k not in _OPAQUE else v
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [camelize(v) if isinstance(v, _NESTED) else v for v in value]
    return value


_NESTED = (dict, list)


def state_view(state: RunState) -> dict[str, Any]:
    """The JSON a client sees for a run (camelCase; ``createdAt`` is when it was requested)."""
    doc: dict[str, Any] = camelize(msgspec.to_builtins(state))
    doc.pop("userId", None)
    for name in OWNER_ONLY:
        doc.pop(name, None)
    doc["createdAt"] = doc.pop("requestedAt", None)
    doc["terminal"] = state.terminal
    return doc


OWNER_ONLY = ("webhook", "deliveries", "shares")
"""Left out of ``state_view``, which SSE frames (also a share link's) and lists carry: a webhook
URL may hold a receiver's token. ``owner_view`` (``GET /runs/{id}``) adds them."""


def owner_view(state: RunState) -> dict[str, Any]:
    doc = state_view(state)
    doc["webhook"] = camelize(msgspec.to_builtins(state.webhook))
    doc["deliveries"] = camelize(msgspec.to_builtins(state.deliveries))
    doc["shares"] = [
        {k: v for k, v in share.items() if k != "tokenSha256"}
        for share in camelize(msgspec.to_builtins(state.shares))
    ]
    return doc


_SENTENCES = {
    "pending": "Waiting to start...",
    "completed": "Analysis complete",
    "failed": "Failed",
    "timeout": "Timed out",
    "cancelled": "Cancelled",
}


def step_title(label: str) -> str:
    """The polling blueprint's step names are title case: "Data Collection", "Risk Analyst"."""
    return " ".join(word[:1].upper() + word[1:] for word in label.split())


def progress_sentence(state: RunState) -> str:
    """What a person reads as the current step: "Running Risk Analyst...", "Waiting to start..."."""
    if state.status != "running":
        return _SENTENCES.get(state.status, state.status)
    step = next((s for s in state.steps if s.name == state.current_step), None)
    return f"Running {step_title(step.label)}..." if step else "Starting..."


def progress_view(state: RunState) -> dict[str, Any]:
    """The polling blueprint's ``/progress`` JSON: its fields with their meanings (names and
    sentences for people, percent 0-100, ``duration`` in ms) plus the machine ids (``id``,
    ``currentStepId``) a client needs to move to the run API."""
    doc: dict[str, Any] = {
        "runId": state.run_id,
        "status": state.status,
        "progress": state.progress,
        "currentStep": progress_sentence(state),
        "currentStepId": state.current_step,
        "steps": [
            {
                "id": s.name,
                "name": step_title(s.label),
                "status": s.status,
                "progress": round(s.progress * 100, 1),
            }
            for s in state.steps
        ],
        "startedAt": _iso(state.started_at),
        "estimatedTimeRemaining": state.eta_s,
    }
    if state.status == "completed":
        doc["result"] = camelize(msgspec.to_builtins(state.result))
        doc["completedAt"] = _iso(state.completed_at)
        doc["duration"] = None if state.duration_s is None else round(state.duration_s * 1000)
    elif state.terminal and state.error is not None:
        doc["error"] = state.error.message
    return doc


def _iso(value: Any) -> str | None:
    return None if value is None else str(msgspec.to_builtins(value))
