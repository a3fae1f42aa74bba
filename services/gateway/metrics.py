"""The gateway's Prometheus metrics (default registry), created once on first use."""

from __future__ import annotations

import functools
import os
import time
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess
from starlette.types import ASGIApp, Message, Receive, Scope, Send


@dataclass(frozen=True, slots=True)
class GatewayMetrics:
    runs_submitted: Counter
    requests: Counter
    duration: Histogram
    sse_connections: Gauge
    sse_dropped: Counter


@functools.cache
def metrics() -> GatewayMetrics:
    return GatewayMetrics(
        runs_submitted=Counter("tickertape_runs_submitted_total", "Runs accepted", ["priority"]),
        requests=Counter(
            "tickertape_http_requests_total", "HTTP requests answered", ["route", "method", "status"]
        ),
        duration=Histogram("tickertape_http_request_duration_seconds", "Time to answer", ["route"]),
        # livesum: with several workers (multiprocess mode) the streams open in the live ones
        sse_connections=Gauge("tickertape_sse_connections", "Open SSE streams", multiprocess_mode="livesum"),
        sse_dropped=Counter("tickertape_sse_dropped_total", "SSE clients dropped for being too slow"),
    )


def exposition() -> bytes:
    """The metrics in Prometheus's text format: this process's, or every worker's summed when
    the gateway runs several (``PROMETHEUS_MULTIPROC_DIR``, set by ``services.gateway.workers``)."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return generate_latest()
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # untyped upstream
    return generate_latest(registry)


def route_template(scope: Scope) -> str:
    """The matched route with its mount prefix (``/api/trading/runs/{run_id}``), never the raw path."""
    template = getattr(scope.get("route"), "path_format", None)
    if not isinstance(template, str):
        return "unmatched"
    try:
        concrete = template.format(**{k: str(v) for k, v in scope.get("path_params", {}).items()})
    except (KeyError, IndexError, ValueError):
        return template
    path: str = scope.get("path", "")
    return path.removesuffix(concrete) + template if path.endswith(concrete) else template


class RequestMetrics:
    """ASGI middleware: counts and times every request by its route template."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.metrics = metrics()
        self._series: dict[tuple[str, str, str], tuple[Counter, Histogram]] = {}
        """The labelled children by (route, method, status): ``labels()`` takes a lock and
        checks its arguments on every call; routes and statuses are few."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()

        async def observed(message: Message) -> None:
            if message["type"] == "http.response.start":  # counted when answered (SSE: when it opens)
                self._observe(scope, message["status"], started)
            await send(message)

        await self.app(scope, receive, observed)

    def _observe(self, scope: Scope, status: int, started: float) -> None:
        key = (route_template(scope), scope["method"], str(status))
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = (
                self.metrics.requests.labels(*key),
                self.metrics.duration.labels(key[0]),
            )
        series[0].inc()
        series[1].observe(time.perf_counter() - started)
