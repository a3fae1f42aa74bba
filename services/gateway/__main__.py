"""``python -m services.gateway``: the gateway with uvicorn, in one process or several.

With ``TT_GATEWAY_WORKERS`` above one (the default on a machine with several CPUs) this process
supervises that many workers, each this same module with ``TT_GATEWAY_WORKERS=1``
(``services.gateway.workers``).
"""

from __future__ import annotations

import gc

from services.gateway.settings import GatewaySettings
from services.gateway.workers import Supervisor, shared_port
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
        # Imported here: a supervisor never loads the app, it only starts the workers that do.
        from services.gateway.app import create_app
        from services.gateway.server import uvicorn_config

        settings = self.settings
        config = uvicorn_config(create_app(settings), settings.host, settings.port)
        config.load()  # the server's own imports, before the freeze
        tune_gc()
        # A worker listens on a socket of its own on the shared port; alone, uvicorn binds it.
        sockets = [shared_port(settings.host, settings.port)] if settings.supervisor_pid else None
        self.serve_http(config, sockets)


def service(settings: GatewaySettings) -> lifecycle.Service:
    """This process's part: a supervisor of workers, or the gateway itself."""
    if settings.workers > 1 and not settings.supervisor_pid:
        return Supervisor(settings)
    return GatewayService(settings)


def main() -> None:
    settings = GatewaySettings.from_env()
    setup_logging("gateway", settings.common.log_format, settings.common.log_level)
    setup_tracing("gateway")
    lifecycle.main(lambda: service(settings))


if __name__ == "__main__":
    main()
