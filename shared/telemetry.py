"""Logging (JSON lines or human text) and tracing setup, done once by each service at start."""

from __future__ import annotations

import contextvars
import json
import logging
import os
import re
import sys
from collections.abc import Mapping
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
            doc["exc"] = record.exc_text or self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__(f"%(asctime)s {service:<9} %(levelname)-7s %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        run_id = getattr(record, "run_id", None) or run_id_var.get()
        return f"{text} [run {run_id[-8:]}]" if run_id else text


MASK = "[redacted]"
SECRET_ENV_SUFFIXES = ("_KEY", "_TOKEN", "_TOKENS", "_SECRET", "_PASSWORD")
"""Environment variables whose values never appear in a log line."""
_SECRET_FIELD = re.compile(
    r"(?i)^(authorization|cookie|set[-_]cookie|password|secret|token|api[-_]?key)$"
    r"|(_token|_secret|_password|_api[-_]?key)$"
)
_SECRET_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(r"(?i)\b(authorization[\"']?\s*[:=]\s*[\"']?)(?:(bearer|basic|token)\s+)?[^\s\"',;}]+"),
        rf"\1\2 {MASK}",
    ),
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"), rf"\1 {MASK}"),
    (re.compile(r"\b(sk|xai|pk|rk)-[A-Za-z0-9_-]{12,}"), MASK),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{6,}\.[A-Za-z0-9_-]{6,}\.[A-Za-z0-9_-]+"), MASK),
    (re.compile(r"(?i)\b(rediss?|https?|postgres(?:ql)?)://([^:/@\s]*):[^@\s]+@"), rf"\1://\2:{MASK}@"),
    (re.compile(r"(?i)([?&](?:token|access_token|api_key|apikey|key|password)=)[^&\s\"']+"), rf"\1{MASK}"),
)


def secret_env_values(environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """Values (and their long list items) of variables named like secrets, longest first."""
    env = os.environ if environ is None else environ
    found: set[str] = set()
    for name, value in env.items():
        if not name.upper().endswith(SECRET_ENV_SUFFIXES) or len(value) < 6:
            continue
        found.add(value)
        for item in re.split(r"[,;\s]+", value):
            found |= {part for part in re.split(r"[=:]", item) if len(part) >= 12} | (
                {item} if len(item) >= 8 else set()
            )
    return tuple(sorted(found, key=len, reverse=True))


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    """``text`` with bearer tokens, Authorization values, API keys and known secrets masked."""
    for secret in secrets:
        text = text.replace(secret, MASK)
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactingFilter(logging.Filter):
    """Masks secrets in a record's message, extra fields and traceback before any handler sees it.

    Secret environment values are read once, at construction (``setup_logging`` time).
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        super().__init__()
        self.secrets = secret_env_values(environ)

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage(), self.secrets)
        record.args = None
        for key, value in list(vars(record).items()):
            if key in _RESERVED or key.startswith("_"):
                continue
            record.__dict__[key] = self._clean(key, value)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, self.secrets)
        return True

    def _clean(self, key: str, value: Any) -> Any:
        if _SECRET_FIELD.search(key) and value not in (None, ""):
            return MASK
        if isinstance(value, str):
            return redact(value, self.secrets)
        if isinstance(value, Mapping):
            return {k: self._clean(str(k), v) for k, v in value.items()}
        return value


def setup_logging(service: str, fmt: str = "json", level: str = "INFO") -> None:
    """Route every logger to stderr in the chosen format ('json' or 'text'), secrets masked."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service) if fmt == "json" else TextFormatter(service))
    handler.addFilter(RedactingFilter())
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
    choice = (exporter or os.environ.get("TT_OTEL_EXPORTER") or "none").lower()
    if choice == "none":
        # No provider at all, not one without an exporter: spans nobody receives would still be
        # built, attributed and ended on every request (FastAPI skips its request telemetry when
        # no provider is configured; figures in docs/benchmarks.md, row 1). Nor the SDK's imports.
        return
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    provider = TracerProvider(resource=Resource.create({"service.name": f"tickertape-{service}"}))
    if choice == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    elif choice == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)


def current_traceparent() -> str | None:
    """The W3C traceparent of the active span, to store inside the event it produces."""
    from opentelemetry import trace

    if not trace.get_current_span().get_span_context().is_valid:
        return None  # no span (tracing off): the propagators would write nothing
    from opentelemetry.propagate import inject

    carrier: dict[str, str] = {}
    inject(carrier)
    return carrier.get("traceparent")


def context_from_traceparent(traceparent: str | None) -> Any:
    """An OpenTelemetry context continuing ``traceparent``; None (meaning the current one) when
    there is none to continue, without the propagators: a run submitted with tracing off pays
    neither their per-call work nor their import (entry points read from every installed package)."""
    if not traceparent:
        return None
    from opentelemetry.propagate import extract

    return extract({"traceparent": traceparent})


def span_context_of(traceparent: str | None) -> Any:
    """The remote SpanContext a traceparent names, for a span link (None if invalid)."""
    from opentelemetry import trace

    ctx = trace.get_current_span(context_from_traceparent(traceparent)).get_span_context()
    return ctx if ctx.is_valid else None
