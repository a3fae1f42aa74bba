"""``python -m services.runner``: one runner process."""

from __future__ import annotations

import asyncio
import signal

from services.runner.settings import RunnerSettings
from services.runner.worker import Worker
from shared.telemetry import setup_logging, setup_tracing


async def serve(settings: RunnerSettings) -> None:
    worker = Worker(settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.request_stop)
    await worker.start()


def main() -> None:
    settings = RunnerSettings.from_env()
    setup_logging("runner", settings.common.log_format, settings.common.log_level)
    setup_tracing("runner")
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        asyncio.run(serve(settings))
    else:
        uvloop.run(serve(settings))


if __name__ == "__main__":
    main()
