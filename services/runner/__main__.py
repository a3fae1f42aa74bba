"""``python -m services.runner``: one runner process, stopped by SIGTERM or SIGINT."""

from __future__ import annotations

import sys

from services.runner.settings import RunnerSettings
from services.runner.worker import Worker
from shared.config import ConfigError
from shared.lifecycle import main as run_service
from shared.telemetry import setup_logging, setup_tracing


def main() -> int:
    try:
        settings = RunnerSettings.from_env()
    except ConfigError as exc:  # a setting it cannot run with: say which, not a traceback
        sys.stderr.write(f"runner: {exc}\n")
        return 2
    setup_logging("runner", settings.common.log_format, settings.common.log_level)
    setup_tracing("runner")
    run_service(lambda: Worker(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
