"""``python -m services.gateway``: one uvicorn process serving the gateway."""

from __future__ import annotations

import uvicorn

from services.gateway.app import create_app
from services.gateway.server import uvicorn_config
from services.gateway.settings import GatewaySettings
from shared.telemetry import setup_logging, setup_tracing


def main() -> None:
    settings = GatewaySettings.from_env()
    setup_logging("gateway", settings.common.log_format, settings.common.log_level)
    setup_tracing("gateway")
    config = uvicorn_config(create_app(settings), settings.host, settings.port)
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
