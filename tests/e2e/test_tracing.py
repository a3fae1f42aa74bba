"""Issue 8's trace: POST /runs → runner run, step and LLM spans → the projector's batch span.

The three services run as real processes exporting with their production OTLP/HTTP exporter
(``TT_OTEL_EXPORTER=otlp``) to a collector this test runs, which keeps the spans in memory.
"""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from shared.catalog import plan_steps
from tests.e2e.stack import Stack

ANALYSTS = ("market", "risk")


@dataclass(frozen=True)
class Captured:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    links: tuple[str, ...]
    """Trace IDs this span links to."""
    attributes: dict[str, object]


class Collector:
    """A minimal OTLP/HTTP trace receiver (``POST /v1/traces``, protobuf) keeping spans in memory."""

    def __init__(self) -> None:
        self.spans: list[Captured] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1/traces"

    def __enter__(self) -> Collector:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def snapshot(self) -> list[Captured]:
        with self._lock:
            return list(self.spans)

    def receive(self, body: bytes) -> None:
        request = ExportTraceServiceRequest.FromString(body)
        with self._lock:
            for resource in request.resource_spans:
                attrs = {a.key: a.value.string_value for a in resource.resource.attributes}
                service = attrs.get("service.name", "")
                for scope in resource.scope_spans:
                    self.spans.extend(_captured(service, span) for span in scope.spans)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                collector.receive(body)
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: object) -> None:
                return

        return Handler


def _captured(service: str, span: Span) -> Captured:
    return Captured(
        service=service,
        name=span.name,
        trace_id=span.trace_id.hex(),
        span_id=span.span_id.hex(),
        parent_id=span.parent_span_id.hex(),
        links=tuple(link.trace_id.hex() for link in span.links),
        attributes={a.key: _value(a.value) for a in span.attributes},
    )


def _value(value: AnyValue) -> object:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


@pytest.fixture(scope="module")
def collector() -> Iterator[Collector]:
    with Collector() as running:
        yield running


@pytest.fixture(scope="module")
def traced_stack(
    redis_url: str, tmp_path_factory: pytest.TempPathFactory, collector: Collector
) -> Iterator[Stack]:
    env = {
        "TT_OTEL_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": collector.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "TT_PROJECTOR_BATCH_WAIT_MS": "100",
    }
    with Stack(redis_url, Path(tmp_path_factory.mktemp("traced")), step_delay_s=0.0, **env) as running:
        yield running


def _wait_for(
    collector: Collector, done: Callable[[list[Captured]], bool], timeout_s: float = 30.0
) -> list[Captured]:
    deadline = time.monotonic() + timeout_s
    while True:
        spans = collector.snapshot()
        if done(spans):
            return spans
        if time.monotonic() > deadline:
            names = sorted({(s.service, s.name) for s in spans})
            raise TimeoutError(f"spans never arrived; got {names}")
        time.sleep(0.1)


def test_one_trace_from_post_runs_through_runner_steps_to_the_projector(
    traced_stack: Stack, collector: Collector
) -> None:
    run_id = traced_stack.submit("AAPL", ANALYSTS)
    state = traced_stack.wait_status(run_id, {"completed", "failed", "timeout", "cancelled"})
    assert state["status"] == "completed", traced_stack.logs()

    def submitted(spans: list[Captured]) -> Captured | None:
        return next((s for s in spans if s.attributes.get("tickertape.run_id") == run_id), None)

    def complete(spans: list[Captured]) -> bool:
        root = submitted(spans)
        if root is None:
            return False
        names = [s.name for s in spans if s.trace_id == root.trace_id]
        steps = [n for n in names if n.startswith("step ")]
        batches = [s for s in spans if s.name == "projector.apply_batch" and root.trace_id in s.links]
        return "run" in names and len(steps) == len(plan_steps(ANALYSTS)) and bool(batches)

    spans = _wait_for(collector, complete)
    root = submitted(spans)
    assert root is not None
    assert root.service == "tickertape-gateway"
    trace = [s for s in spans if s.trace_id == root.trace_id]

    gateway = {s.span_id for s in trace if s.service == "tickertape-gateway"}
    [origin] = [s for s in trace if not s.parent_id]  # the trace starts at the gateway's request
    assert origin.service == "tickertape-gateway"

    [run] = [s for s in trace if s.name == "run"]
    assert (run.service, run.attributes["run_id"]) == ("tickertape-runner", run_id)
    assert run.parent_id in gateway  # continued from the traceparent stored in RunRequested

    steps = [s for s in trace if s.name.startswith("step ")]
    assert sorted(s.name.removeprefix("step ") for s in steps) == sorted(plan_steps(ANALYSTS))
    assert {s.parent_id for s in steps} == {run.span_id}

    llm = [s for s in trace if s.name == "llm.call"]
    assert llm, "the offline model's calls are traced too"
    assert {s.attributes["llm.model"] for s in llm} == {"offline"}
    assert all(s.parent_id in {run.span_id} | {st.span_id for st in steps} for s in llm)

    batches = [s for s in spans if s.name == "projector.apply_batch" and root.trace_id in s.links]
    assert {s.service for s in batches} == {"tickertape-projector"}
    assert all(int(str(s.attributes["messaging.batch.message_count"])) >= 1 for s in batches)
    assert all(
        s.attributes["tickertape.batch.first_id"] and s.attributes["tickertape.batch.last_id"]
        for s in batches
    )
