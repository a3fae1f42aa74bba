"""The projector's Prometheus metrics (default registry), created once on first use."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from prometheus_client import Counter, Gauge, Histogram


@dataclass(frozen=True, slots=True)
class Metrics:
    applied: Counter
    skipped: Counter
    batch_size: Histogram
    lag_entries: Gauge
    lag_seconds: Gauge
    retention: Counter


@functools.cache
def metrics() -> Metrics:
    """The process's metrics (registering twice in one registry would raise)."""
    return Metrics(
        applied=Counter("tickertape_projector_events_applied", "Events folded into the read models"),
        skipped=Counter("tickertape_projector_events_skipped", "Log entries skipped, by reason", ["reason"]),
        batch_size=Histogram(
            "tickertape_projector_batch_size",
            "Entries per applied batch",
            buckets=(1, 5, 10, 50, 100, 250, 500, 1000, 2500, 5000),
        ),
        lag_entries=Gauge("tickertape_projector_lag_entries", "Global-log entries not yet applied"),
        lag_seconds=Gauge("tickertape_projector_lag_seconds", "Log head time minus checkpoint time"),
        retention=Counter("tickertape_retention_actions", "What retention did, by action", ["action"]),
    )
