"""Request bodies (strict: unknown fields and wrong types are refused) and JSON views of state."""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any, Literal

import msgspec
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, field_validator

from shared.catalog import ANALYST_IDS, PIPELINES
from shared.events import AnyEvent
from shared.reducer import RunState

SYMBOL_PATTERN = r"^[A-Za-z0-9^][A-Za-z0-9.\-^=]*$"
"""Tickers such as AAPL, BRK.B, ^GSPC, EURUSD=X, BTC-USD; never '.', '..' or a leading '-'/'='
(a symbol names a CSV file for the csv provider: it must not be able to name a directory)."""
DATA_PROVIDERS = ("synthetic", "csv", "yfinance")


def _known_analyst(value: str) -> str:
    if value not in ANALYST_IDS:
        raise ValueError(f"{value!r} is not an analyst; choose from {', '.join(ANALYST_IDS)}")
    return value


AnalystId = Annotated[
    str, AfterValidator(_known_analyst), Field(json_schema_extra={"enum": list(ANALYST_IDS)})
]
Symbol = Annotated[
    str,
    StringConstraints(to_upper=True, min_length=1, max_length=10, pattern=SYMBOL_PATTERN),
]


class RunRequest(BaseModel):
    """What a client may ask for; anything else in the body is refused."""

    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=False, frozen=True)

    symbol: Symbol = Field(
        description="Ticker, 1-10 of A-Z 0-9 . - ^ = starting with a letter, digit or ^ (upper-cased)",
        examples=["AAPL"],
    )
    analysts: list[AnalystId] = Field(min_length=1, max_length=len(ANALYST_IDS))
    model_id: str = Field("offline", alias="modelId", min_length=1, max_length=100)
    priority: Literal["normal", "high"] = "normal"
    debate_rounds: int = Field(1, alias="debateRounds", ge=0, le=5)
    max_tokens: int | None = Field(None, alias="maxTokens", ge=1, le=10_000_000)
    max_cost_usd: float | None = Field(None, alias="maxCostUsd", gt=0, le=1000)
    pipeline: str = Field(
        "full",
        min_length=1,
        max_length=64,
        description="'full' or 'noop' (the built-in analysis), or a pipeline GET /pipelines lists",
    )
    data_provider: Literal["synthetic", "csv", "yfinance"] | None = Field(None, alias="dataProvider")

    @field_validator("analysts")
    @classmethod
    def _no_duplicates(cls, value: list[str]) -> list[str]:
        seen = [a for i, a in enumerate(value) if a in value[:i]]
        if seen:
            raise ValueError(f"analyst {seen[0]!r} is listed twice")
        return value

    def fingerprint(self) -> str:
        """SHA-256 of the canonical (validated, normalised) request: what idempotency compares."""
        canonical = json.dumps(self.model_dump(by_alias=True), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


assert set(PIPELINES) == {"full", "noop"}


class SessionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    token: str = Field(min_length=1, max_length=512)


class Accepted(BaseModel):
    runId: str
    status: str


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


_OPAQUE = frozenset({"evidence", "output", "value"})
"""Maps whose keys are data, not field names: left as they are."""


def camelize(value: Any) -> Any:
    if isinstance(value, dict):
        return {camel(k): (v if k in _OPAQUE else camelize(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [camelize(v) for v in value]
    return value


def state_view(state: RunState) -> dict[str, Any]:
    """The JSON a client sees for a run (camelCase; ``createdAt`` is when it was requested)."""
    doc: dict[str, Any] = camelize(msgspec.to_builtins(state))
    doc.pop("userId", None)
    doc["createdAt"] = doc.pop("requestedAt", None)
    doc["terminal"] = state.terminal
    return doc


def event_view(event: AnyEvent) -> dict[str, Any]:
    doc: dict[str, Any] = camelize(msgspec.to_builtins(event))
    doc.pop("userId", None)
    return doc


def progress_view(state: RunState) -> dict[str, Any]:
    """The polling blueprint's ``/progress`` JSON, exactly its fields (percentages 0-100)."""
    doc: dict[str, Any] = {
        "runId": state.run_id,
        "status": state.status,
        "progress": state.progress,
        "currentStep": state.current_step,
        "steps": [
            {"name": s.name, "status": s.status, "progress": round(s.progress * 100, 1)} for s in state.steps
        ],
        "startedAt": _iso(state.started_at),
        "estimatedTimeRemaining": state.eta_s,
    }
    if state.status == "completed":
        doc["result"] = camelize(msgspec.to_builtins(state.result))
        doc["completedAt"] = _iso(state.completed_at)
        doc["duration"] = state.duration_s
    elif state.terminal and state.error is not None:
        doc["error"] = state.error.message
    return doc


def _iso(value: Any) -> str | None:
    return None if value is None else str(msgspec.to_builtins(value))
