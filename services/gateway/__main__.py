"""``python -m services.gateway``: one process serving the gateway with uvicorn."""

from __future__ import annotations

import gc

from services.gateway.app import create_app
from services.gateway.server import uvicorn_config
from services.gateway.settings import GatewaySettings
from shared import lifecycle
from shared.telemetry import setup_logging, setup_tracing

GC_THRESHOLDS = (2_000, 10, 50)
"""Young collections every 2,000 allocations instead of 700, full ones five times rarer."""


def tune_gc() -> None:
    """Process-wide, for the gateway's own process: fewer collections, no full one per burst.

    Everything alive once the app and the server are loaded (modules, routes, schemas) is frozen
    out of collections: a full collection then walks only what requests and streams allocate,
    and every SSE client waits while one runs (figures in docs/benchmarks.md).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


class GatewayService(lifecycle.Service):
    """The gateway process: the app (its lifespan owns the clients and the SSE hub) on uvicorn."""

    name = "gateway"

    def __init__(self, settings: GatewaySettings) -> None:
        super().__init__()
        self.settings = settings

    async def start(self) -> None:
        config = uvicorn_config(create_app(self.settings), self.settings.host, self.settings.port)
        config.load()  # the server's own imports, before the freeze
        tune_gc()
        self.serve_http(config)


def main() -> None:
    settings = GatewaySettings.from_env()
    setup_logging("gateway", settings.common.log_format, settings.common.log_level)
    setup_tracing("gateway")
    lifecycle.main(lambda: GatewayService(settings))


if __name__ == "__main__":
    main()
