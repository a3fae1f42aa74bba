"""Logging (JSON lines or human text) and tracing setup, done once by each service at start."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

run_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("run_id", default=None)

_RESERVED = set(vars(logging.makeLogRecord({})))


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, service, logger, message, run_id, trace_id, extras."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "event": record.getMessage(),
        }
        run_id = getattr(record, "run_id", None) or run_id_var.get()
        if run_id:
            doc["run_id"] = run_id
        trace_id = current_trace_id()
        if trace_id:
            doc["trace_id"] = trace_id
        for key, value in vars(record).items():
            if key not in _RESERVED and key not in doc and not key.startswith("_"):
                doc[key] = value
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__(f"%(asctime)s {service:<9} %(levelname)-7s %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        run_id = getattr(record, "run_id", None) or run_id_var.get()
        return f"{text} [run {run_id[-8:]}]" if run_id else text


def setup_logging(service: str, fmt: str = "json", level: str = "INFO") -> None:
    """Route every logger to stderr in the chosen format ('json' or 'text')."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service) if fmt == "json" else TextFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("uvicorn.access", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def current_trace_id() -> str | None:
    """The active span's trace id in hex, if a span is recording."""
    try:
        from opentelemetry import trace
    except ImportError:  # pragma: no cover - opentelemetry is a runtime dependency
        return None
    ctx = trace.get_current_span().get_span_context()
    return f"{ctx.trace_id:032x}" if ctx.is_valid else None


def setup_tracing(service: str, exporter: str | None = None) -> None:
    """Install a tracer provider; the exporter is ``TT_OTEL_EXPORTER``: none, console or otlp.

    ``otlp`` sends to ``OTEL_EXPORTER_OTLP_ENDPOINT`` (read by the exporter itself). Tests
    install their own provider with an in-memory exporter before calling services.
    """
    import os

    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    choice = (exporter or os.environ.get("TT_OTEL_EXPORTER") or "none").lower()
    provider = TracerProvider(resource=Resource.create({"service.name": f"tickertape-{service}"}))
    if choice == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    elif choice == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)


def current_traceparent() -> str | None:
    """The W3C traceparent of the active span, to store inside the event it produces."""
    from opentelemetry.propagate import inject

    carrier: dict[str, str] = {}
    inject(carrier)
    return carrier.get("traceparent")


def context_from_traceparent(traceparent: str | None) -> Any:
    """An OpenTelemetry context continuing ``traceparent`` (the current one when None)."""
    from opentelemetry.propagate import extract

    return extract({"traceparent": traceparent} if traceparent else {})


def span_context_of(traceparent: str | None) -> Any:
    """The remote SpanContext a traceparent names, for a span link (None if invalid)."""
    from opentelemetry import trace

    ctx = trace.get_current_span(context_from_traceparent(traceparent)).get_span_context()
    return ctx if ctx.is_valid else None
