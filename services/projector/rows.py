"""How a RunState becomes a ``runs`` row (and back): one place for writer and migrations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from shared import streamids
from shared.run_state import RunState

COLUMNS: tuple[str, ...] = (
    "run_id",
    "user_id",
    "symbol",
    "model_id",
    "status",
    "current_step",
    "progress",
    "attempt",
    "runner_id",
    "requested_us",
    "started_us",
    "completed_us",
    "updated_us",
    "duration_s",
    "queue_wait_s",
    "llm_calls",
    "prompt_tokens",
    "completion_tokens",
    "tokens",
    "cost_usd",
    "error_code",
    "error_message",
    "last_event_id",
    "logged_ms",
    "state",
)
"""Stored columns of ``runs``; analysts, steps, result and the ISO times are generated from state.

``logged_ms`` is Redis's clock (the milliseconds of the global-log entry ID that delivered the
run's last event): retention and reconciliation age runs by it, never by an event's ``at``,
which is the appending process's wall clock and may be hours or days off."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)

Row = tuple[str | int | float | None, ...]


def upsert_sql(columns: tuple[str, ...]) -> str:
    """Insert or replace ``columns`` of one run (``run_id`` first)."""
    return (
        f"INSERT INTO runs ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)}) "
        f"ON CONFLICT (run_id) DO UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in columns[1:])}"
    )


UPSERT_SQL = upsert_sql(COLUMNS)


def micros(at: datetime | None) -> int | None:
    """Epoch microseconds, exact (ordering and cursors never compare floats or strings)."""
    if at is None:
        return None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return (at - _EPOCH) // _ONE_US


def redis_ms(stream_id: str, fallback_us: int | None) -> int:
    """The Redis time (ms) of a stream ID; ``fallback_us`` // 1000 when it is not one."""
    try:
        return streamids.millis(stream_id)
    except ValueError:
        return (fallback_us or 0) // 1000


def row_of(state: RunState, encoded: bytes, logged_ms: int | None = None) -> Row:
    """The stored columns of one run; ``encoded`` is the msgspec JSON of ``state``.

    ``logged_ms`` is the time of the global-log entry of the run's last event; without it (a
    migration's back-fill), that of its run-stream ID, which the same append stamped.
    """
    usage, error = state.usage, state.error
    updated_us = micros(state.updated_at) or 0
    if logged_ms is None:
        logged_ms = redis_ms(state.last_event_id, updated_us)
    return (
        state.run_id,
        state.user_id,
        state.symbol,
        state.model_id,
        state.status,
        state.current_step,
        state.progress,
        state.attempt,
        state.runner_id,
        micros(state.requested_at) or 0,
        micros(state.started_at),
        micros(state.completed_at),
        updated_us,
        state.duration_s,
        state.queue_wait_s,
        usage.calls,
        usage.prompt_tokens,
        usage.completion_tokens,
        usage.prompt_tokens + usage.completion_tokens,
        usage.cost_usd,
        error.code if error else None,
        error.message if error else None,
        state.last_event_id,
        logged_ms,
        encoded.decode(),
    )
