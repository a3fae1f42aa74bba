"""Issue 8's metrics: after one real run, every service's /metrics has the agreed names with real values."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from shared.catalog import plan_steps
from tests.e2e.stack import Stack

ANALYSTS = ("market", "news")
TERMINAL = {"completed", "failed", "timeout", "cancelled"}

GATEWAY = (
    "tickertape_runs_submitted_total", "tickertape_http_requests_total",
    "tickertape_http_request_duration_seconds", "tickertape_sse_connections", "tickertape_sse_dropped_total",
)  # fmt: skip
RUNNER = (
    "tickertape_runs_finished_total", "tickertape_run_duration_seconds", "tickertape_step_duration_seconds",
    "tickertape_queue_depth", "tickertape_queue_lag", "tickertape_queue_pending",
    "tickertape_queue_oldest_pending_seconds", "tickertape_reclaims_total", "tickertape_deadletters_total",
    "tickertape_cancel_latency_seconds", "tickertape_runs_executing", "tickertape_llm_calls_total",
    "tickertape_llm_tokens_total", "tickertape_llm_cost_usd_total",
)  # fmt: skip
PROJECTOR = (
    "tickertape_projector_events_applied_total", "tickertape_projector_events_skipped_total",
    "tickertape_projector_batch_size", "tickertape_projector_lag_entries", "tickertape_projector_lag_seconds",
    "tickertape_retention_actions_total",
)  # fmt: skip


class Scrape:
    """One /metrics answer: declared metric names and sample values by (name, labels)."""

    def __init__(self, url: str) -> None:
        response = httpx.get(f"{url}/metrics", timeout=5)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        self.declared = {line.split()[2] for line in response.text.splitlines() if line.startswith("# TYPE ")}
        self.samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        for family in text_string_to_metric_families(response.text):
            for sample in family.samples:
                self.samples[(sample.name, frozenset(sample.labels.items()))] = sample.value

    def value(self, name: str, **labels: str) -> float:
        """The sum of ``name``'s samples whose labels include ``labels``."""
        wanted = set(labels.items())
        return sum(v for (n, ls), v in self.samples.items() if n == name and wanted <= ls)

    def has(self, name: str) -> bool:
        return name in self.declared or any(n == name for n, _ in self.samples)


@pytest.fixture(scope="module")
def paced_stack(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack whose steps last long enough to scrape while a run executes."""
    with Stack(redis_url, Path(tmp_path_factory.mktemp("metrics")), step_delay_s=0.4) as running:
        yield running


def _hold_sse(url: str, opened: threading.Event) -> None:
    with httpx.stream("GET", url, timeout=httpx.Timeout(10.0, read=60.0)) as response:
        for _ in response.iter_lines():
            opened.set()


def test_every_service_exposes_its_metrics_with_real_values_after_a_run(paced_stack: Stack) -> None:
    stack = paced_stack
    run_id = stack.submit("AAPL", ANALYSTS)
    opened = threading.Event()
    listener = threading.Thread(target=_hold_sse, args=(f"{stack.api}/runs/{run_id}/events", opened))
    listener.start()
    try:
        assert opened.wait(15), stack.logs()
        stack.wait_progress(run_id, 1.0)
        during_gateway, during_runner = _live(stack, run_id)
        state = stack.wait_status(run_id, TERMINAL)
    finally:
        listener.join(60)
    assert state["status"] == "completed", stack.logs()
    assert during_gateway.value("tickertape_sse_connections") >= 1
    assert during_runner.value("tickertape_runs_executing") == 1

    gateway, runner, projector = _settled(stack)
    for scrape, names in ((gateway, GATEWAY), (runner, RUNNER), (projector, PROJECTOR)):
        assert [n for n in names if not scrape.has(n)] == []

    assert gateway.value("tickertape_runs_submitted_total", priority="normal") >= 1
    assert gateway.value("tickertape_http_requests_total", route="/api/trading/runs", status="202") >= 1
    assert gateway.value("tickertape_http_request_duration_seconds_count", route="/api/trading/runs") >= 1
    assert gateway.value("tickertape_sse_connections") == 0  # the stream closed after the terminal event

    assert runner.value("tickertape_runs_finished_total", status="completed") >= 1
    assert runner.value("tickertape_run_duration_seconds_count") >= 1
    for step in plan_steps(ANALYSTS):
        assert runner.value("tickertape_step_duration_seconds_count", step=step) >= 1, step
    assert runner.value("tickertape_llm_calls_total", model="offline") > 0
    assert runner.value("tickertape_llm_tokens_total", model="offline", kind="prompt") > 0
    assert runner.value("tickertape_llm_tokens_total", model="offline", kind="completion") > 0
    queues = {dict(labels)["queue"] for name, labels in runner.samples if name == "tickertape_queue_depth"}
    assert queues == {stack.keys.queue, stack.keys.queue_high}
    assert runner.value("tickertape_runs_executing") == 0

    assert projector.value("tickertape_projector_events_applied_total") >= state["eventCount"] > 0
    assert projector.value("tickertape_projector_batch_size_count") >= 1
    assert projector.value("tickertape_projector_lag_entries") == 0


def _live(stack: Stack, run_id: str) -> tuple[Scrape, Scrape]:
    """Scrapes of gateway and runner while the run is still executing."""
    gateway, runner = Scrape(stack.gateway.url), Scrape(stack.runner.url)
    assert stack.run(run_id)["status"] == "running", "the run ended before it could be observed"
    return gateway, runner


def _settled(stack: Stack, timeout_s: float = 10.0) -> tuple[Scrape, Scrape, Scrape]:
    """Scrapes once the runner counted the run and the gateway closed the stream."""
    deadline = time.monotonic() + timeout_s
    while True:
        scrapes = Scrape(stack.gateway.url), Scrape(stack.runner.url), Scrape(stack.projector.url)
        gateway, runner, _ = scrapes
        settled = (
            runner.value("tickertape_runs_executing") == 0
            and gateway.value("tickertape_sse_connections") == 0
        )
        if settled or time.monotonic() > deadline:
            return scrapes
        time.sleep(0.1)
