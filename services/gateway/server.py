"""How the gateway is served: uvicorn on uvloop + httptools, with the connection's transport exposed.

``TransportProtocol`` is uvicorn's httptools protocol plus one scope extension: the request's
transport. The SSE fan-out uses it to write each frame's pre-framed bytes (built once per event)
straight to every client's socket; any other ASGI server simply lacks the extension and the
stream falls back to a queue and a task per client.
"""

from __future__ import annotations

from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

TRANSPORT_EXTENSION = "tickertape.transport"


class TransportProtocol(HttpToolsProtocol):
    """httptools HTTP/1.1 whose request scopes carry ``extensions[TRANSPORT_EXTENSION]``."""

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope["extensions"] = {TRANSPORT_EXTENSION: {"transport": self.transport}}


def uvicorn_config(app: Any, host: str, port: int, **overrides: Any) -> uvicorn.Config:
    """The one uvicorn configuration (the service's and the tests')."""
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "loop": "uvloop",
        "http": TransportProtocol,
        "ws": "none",
        "log_config": None,
        "access_log": False,
        "proxy_headers": True,
        "timeout_graceful_shutdown": 5,
    }
    return uvicorn.Config(app, **(options | overrides))
