"""/healthz, /readyz and /metrics of a runner process, served in the worker's own loop.

Three fixed GET routes need no framework: a small HTTP/1.1 responder on ``asyncio.start_server``
(one request per connection, ``Connection: close``). It keeps uvicorn and Starlette out of the
runner's start-up, which a freshly scaled-out runner pays before it takes its first run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from shared.problems import PROBLEM_JSON, problem_bytes

logger = logging.getLogger(__name__)

Status = Callable[[], dict[str, Any]]
_HEAD_LIMIT = 16 * 1024
_READ_TIMEOUT_S = 10.0
_REASONS = {
    200: "OK",
    404: "Not Found",
    405: "Method Not Allowed",
    400: "Bad Request",
    503: "Service Unavailable",
}


class HealthServer:
    """Answers the three routes until ``close()`` (or the serving task is cancelled)."""

    def __init__(
        self, status: Status, host: str, port: int, ready: Callable[[], bool] = lambda: True
    ) -> None:
        self.status = status
        self.ready = ready
        self.host = host
        self.port = port
        self._closed = asyncio.Event()
        self._handlers: set[asyncio.Task[None]] = set()

    def close(self) -> None:
        self._closed.set()

    async def serve(self) -> None:
        server = await asyncio.start_server(self._accept, self.host, self.port)
        try:
            await self._closed.wait()
        finally:
            server.close()
            for task in list(self._handlers):
                task.cancel()
            with contextlib.suppress(Exception):
                await server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        try:
            await asyncio.wait_for(self._answer(reader, writer), _READ_TIMEOUT_S)
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        except Exception:
            logger.exception("health request failed")
        finally:
            if task is not None:
                self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        if len(head) > _HEAD_LIMIT:
            raise asyncio.LimitOverrunError("request head too long", len(head))
        parts = head.split(b"\r\n", 1)[0].decode("latin-1").split()
        if len(parts) != 3:
            status, body, kind = _problem(400, "Bad Request", "malformed request line")
        else:
            status, body, kind = self.respond(parts[0], parts[1].split("?", 1)[0])
        writer.write(_response(status, body, kind, include_body=parts[:1] != ["HEAD"]))
        await writer.drain()

    def respond(self, method: str, path: str) -> tuple[int, bytes, str]:
        """(status, body, content type) for one request."""
        if path not in ("/healthz", "/readyz", "/metrics"):
            return _problem(404, "Not Found", f"no route {path}")
        if method not in ("GET", "HEAD"):
            return _problem(405, "Method Not Allowed", f"{path} answers GET only")
        if path == "/metrics":
            return 200, generate_latest(), CONTENT_TYPE_LATEST
        if path == "/healthz":
            return 200, json.dumps({"status": "ok", **self.status()}).encode(), "application/json"
        ok = self.ready()
        body = json.dumps({"status": "ready" if ok else "not ready"}).encode()
        return (200 if ok else 503), body, "application/json"


def _problem(status: int, title: str, detail: str) -> tuple[int, bytes, str]:
    return status, problem_bytes(status, detail, title=title), PROBLEM_JSON


def _response(status: int, body: bytes, kind: str, *, include_body: bool = True) -> bytes:
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, '')}\r\n"
        f"content-type: {kind}\r\ncontent-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("latin-1") + (body if include_body else b"")
