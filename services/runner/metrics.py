"""The runner's Prometheus metrics (default registry), created once on first use."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from prometheus_client import Counter, Gauge, Histogram

from shared.results import Usage

_DURATION_BUCKETS = (0.05, 0.25, 1, 5, 15, 30, 60, 120, 180, 300, 600, 1200)
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


@dataclass(frozen=True, slots=True)
class RunnerMetrics:
    runs_finished: Counter
    run_duration: Histogram
    step_duration: Histogram
    queue_depth: Gauge
    queue_lag: Gauge
    queue_pending: Gauge
    queue_oldest_pending: Gauge
    reclaims: Counter
    deadletters: Counter
    cancel_latency: Histogram
    executing: Gauge
    lease_pressure: Gauge
    late_renewals: Counter
    llm_calls: Counter
    llm_tokens: Counter
    llm_cost: Counter

    def record_usage(self, model: str, usage: Usage) -> None:
        if usage.calls:
            self.llm_calls.labels(model=model).inc(usage.calls)
        if usage.prompt_tokens:
            self.llm_tokens.labels(model=model, kind="prompt").inc(usage.prompt_tokens)
        if usage.completion_tokens:
            self.llm_tokens.labels(model=model, kind="completion").inc(usage.completion_tokens)
        if usage.cost_usd:
            self.llm_cost.labels(model=model).inc(usage.cost_usd)


@cache
def metrics() -> RunnerMetrics:
    """The process's metrics; registered in the default registry on the first call only."""
    return RunnerMetrics(
        runs_finished=Counter("tickertape_runs_finished_total", "Runs ended, by status", ["status"]),
        run_duration=Histogram(
            "tickertape_run_duration_seconds", "Run duration from first start", buckets=_DURATION_BUCKETS
        ),
        step_duration=Histogram(
            "tickertape_step_duration_seconds", "Step duration", ["step"], buckets=_DURATION_BUCKETS
        ),
        queue_depth=Gauge("tickertape_queue_depth", "Entries in the queue stream", ["queue"]),
        queue_lag=Gauge("tickertape_queue_lag", "Entries not yet delivered to the group", ["queue"]),
        queue_pending=Gauge("tickertape_queue_pending", "Entries delivered, not acked", ["queue"]),
        queue_oldest_pending=Gauge(
            "tickertape_queue_oldest_pending_seconds", "Age of the oldest pending entry", ["queue"]
        ),
        reclaims=Counter("tickertape_reclaims_total", "Queue entries taken over from another runner"),
        deadletters=Counter("tickertape_deadletters_total", "Entries dead-lettered", ["reason"]),
        cancel_latency=Histogram(
            "tickertape_cancel_latency_seconds", "RunCancelled to confirmation", buckets=_LATENCY_BUCKETS
        ),
        executing=Gauge("tickertape_runs_executing", "Runs this process holds"),
        lease_pressure=Gauge(
            "tickertape_runner_lease_pressure_seconds",
            "Event-loop lag plus lease-renewal round trip (new work waits above the limit)",
        ),
        late_renewals=Counter(
            "tickertape_runner_late_renewals_total", "Own entries a claim found idle past the lease (kept)"
        ),
        llm_calls=Counter("tickertape_llm_calls_total", "LLM calls", ["model"]),
        llm_tokens=Counter("tickertape_llm_tokens_total", "LLM tokens", ["model", "kind"]),
        llm_cost=Counter("tickertape_llm_cost_usd_total", "Estimated LLM cost", ["model"]),
    )
