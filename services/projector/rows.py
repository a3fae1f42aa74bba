"""How a RunState becomes a ``runs`` row (and back): one place for writer and migrations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from shared.reducer import RunState

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
    "state",
)
"""Stored columns of ``runs``; analysts, steps, result and the ISO times are generated from state."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)

Row = tuple[str | int | float | None, ...]

UPSERT_SQL = (
    f"INSERT INTO runs ({', '.join(COLUMNS)}) VALUES ({', '.join('?' for _ in COLUMNS)}) "
    f"ON CONFLICT (run_id) DO UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in COLUMNS[1:])}"
)


def micros(at: datetime | None) -> int | None:
    """Epoch microseconds, exact (ordering and cursors never compare floats or strings)."""
    if at is None:
        return None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return (at - _EPOCH) // _ONE_US


def row_of(state: RunState, encoded: bytes) -> Row:
    """The stored columns of one run; ``encoded`` is the msgspec JSON of ``state``."""
    usage, error = state.usage, state.error
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
        micros(state.updated_at) or 0,
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
        encoded.decode(),
    )
