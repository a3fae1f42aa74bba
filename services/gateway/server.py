"""How the gateway is served: uvicorn on uvloop and httptools, chosen by uvicorn's own names."""

from __future__ import annotations

from typing import Any

import uvicorn


def uvicorn_config(app: Any, host: str, port: int, **overrides: Any) -> uvicorn.Config:
    """The one uvicorn configuration (the service's and the tests')."""
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "loop": "uvloop",
        "http": "httptools",
        "ws": "none",
        "log_config": None,
        "access_log": False,
        "proxy_headers": True,
        "timeout_graceful_shutdown": 5,
    }
    return uvicorn.Config(app, **(options | overrides))
