"""/healthz and /metrics of a runner process: a tiny ASGI app served in the worker's own loop."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Generator
from typing import Any

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

Status = Callable[[], dict[str, Any]]


def build_app(status: Status, ready: Callable[[], bool] = lambda: True) -> Starlette:
    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok", **status()})

    async def readyz(_: Request) -> Response:
        ok = ready()
        return JSONResponse({"status": "ready" if ok else "not ready"}, 200 if ok else 503)

    async def metrics(_: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    routes = [Route("/healthz", healthz), Route("/readyz", readyz), Route("/metrics", metrics)]
    return Starlette(routes=routes)


class EmbeddedServer(uvicorn.Server):
    """uvicorn without its own signal handling: the worker owns SIGTERM and SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def embedded_server(
    status: Status, host: str, port: int, ready: Callable[[], bool] = lambda: True
) -> EmbeddedServer:
    config = uvicorn.Config(
        build_app(status, ready), host=host, port=port, log_level="warning", lifespan="off", access_log=False
    )
    return EmbeddedServer(config)
