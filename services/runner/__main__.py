"""``python -m services.runner``: one runner process, stopped by SIGTERM or SIGINT."""

from __future__ import annotations

from services.runner.settings import RunnerSettings
from services.runner.worker import Worker
from shared.lifecycle import main as run_service
from shared.telemetry import setup_logging, setup_tracing


def main() -> None:
    settings = RunnerSettings.from_env()
    setup_logging("runner", settings.common.log_format, settings.common.log_level)
    setup_tracing("runner")
    run_service(lambda: Worker(settings))


if __name__ == "__main__":
    main()
