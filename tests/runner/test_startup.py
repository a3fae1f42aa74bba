"""What a runner process loads before it takes its first run: a restart after a crash, or a
runner scaled out under a backlog, waits for every import its start pays."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.support.processes import ROOT

NOT_AT_START = (
    "uvicorn",  # the runner's /healthz is its own small server, not an ASGI app
    "fastapi",
    "starlette",
    "opentelemetry.sdk.trace",  # tracing off (TT_OTEL_EXPORTER unset): no provider, no SDK
    "opentelemetry.propagate",  # no traceparent to continue: the propagators are not loaded
)
PROBE = """
import json, sys
import services.runner.__main__
from shared.telemetry import context_from_traceparent, setup_tracing
setup_tracing("runner", "none")
context_from_traceparent(None)
print(json.dumps(sorted(sys.modules)))
"""


def test_the_runner_starts_without_the_http_framework_or_the_tracing_sdk() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, check=True, timeout=60
    )
    loaded = set(json.loads(done.stdout))
    assert "services.runner.worker" in loaded
    assert [name for name in NOT_AT_START if name in loaded] == []
