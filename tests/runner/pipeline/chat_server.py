"""A tiny real chat-completions server (uvicorn, raw ASGI) whose answers a test scripts.

It speaks enough of the OpenAI protocol for the client: POST /v1/chat/completions with
messages, answering choices and usage. Each scripted behaviour answers one request; after the
script runs out the server answers sensibly (text, or JSON for the trader and final steps).
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

TRADE = {
    "action": "BUY",
    "entry": 100.0,
    "stop": 95.0,
    "target": 110.0,
    "position_pct": 5.0,
    "rationale": "r",
}
ASSESSMENT = {
    "decision": "BUY",
    "rating": "Overweight",
    "confidence": 0.7,
    "horizon": "3-6 months",
    "rationale": "The numbers lean bullish.",
    "key_risks": ["volatility"],
}


@dataclass(frozen=True)
class Status:
    """Answer with an HTTP error status (and headers such as Retry-After)."""

    code: int
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Reply:
    """Answer 200 with this assistant content."""

    content: str


@dataclass(frozen=True)
class Slow:
    """Hold the request open until the client goes away (or ``seconds`` pass)."""

    seconds: float = 30.0


Behaviour = Status | Reply | Slow


def sensible(body: dict[str, Any]) -> str:
    prompt = " ".join(m["content"] for m in body["messages"] if m["role"] == "user")
    if "Propose a trade" in prompt:
        return json.dumps(TRADE)
    if "final assessment" in prompt:
        return json.dumps(ASSESSMENT)
    return "Model summary line citing the numbers.\nMore reasoning."


def tool_call(body: dict[str, Any]) -> dict[str, Any] | None:
    """With ``tools`` offered, call the next one not yet answered (one per request, in order,
    as an analyst gathering data does); None once each has answered."""
    tools = body.get("tools") or []
    answered = sum(1 for m in body["messages"] if m["role"] == "tool")
    if answered >= len(tools):
        return None
    name = tools[answered]["function"]["name"]
    call = {"id": f"call_{answered}", "type": "function", "function": {"name": name, "arguments": "{}"}}
    return {"role": "assistant", "content": "", "tool_calls": [call]}


class ChatServer:
    def __init__(self, prompt_tokens: int = 100, completion_tokens: int = 20) -> None:
        self.script: list[Behaviour] = []
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.received = threading.Event()
        self.disconnected = threading.Event()
        self.usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens}
        self.port = 0
        self.delay_s = 0.0
        self.chunk_delay_s = 0.0
        """Between streamed chunks (a test then sees the text arrive in several progress reports)."""
        """Each answer waits this long (a test's kill can then land while a call is in flight)."""

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = await self._body(receive)
        self.requests.append(body)
        self.headers.append({k.decode(): v.decode() for k, v in scope["headers"]})
        self.received.set()
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if not self.script and (call := tool_call(body)) is not None:
            await self._send(send, 200, {"choices": [{"message": call}], "usage": self.usage})
            return
        behaviour = self.script.pop(0) if self.script else Reply(sensible(body))
        match behaviour:
            case Status(code, headers):
                await self._send(send, code, {"error": {"message": "scripted"}}, headers)
            case Reply(content) if body.get("stream"):
                await self._stream(send, content)
            case Reply(content):
                answer = {
                    "choices": [{"message": {"role": "assistant", "content": content}}],
                    "usage": self.usage,
                }
                await self._send(send, 200, answer)
            case Slow(seconds):
                await self._hold(receive, seconds)
                await self._send(send, 200, {"choices": [{"message": {"content": "late"}}]})

    async def _stream(self, send: Send, content: str) -> None:
        """Server-sent chunks, a word each, ``chunk_delay_s`` apart, then usage and [DONE]."""
        headers = [(b"content-type", b"text/event-stream")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        words = content.split(" ")
        for index, word in enumerate(words):
            delta = {"choices": [{"delta": {"content": word + (" " if index < len(words) - 1 else "")}}]}
            await send({"type": "http.response.body", "body": _event(delta), "more_body": True})
            await asyncio.sleep(self.chunk_delay_s)
        tail = _event({"choices": [], "usage": self.usage}) + b"data: [DONE]\n\n"
        await send({"type": "http.response.body", "body": tail})

    async def _hold(self, receive: Receive, seconds: float) -> None:
        try:
            message = await asyncio.wait_for(receive(), seconds)
        except TimeoutError:
            return
        if message["type"] == "http.disconnect":
            self.disconnected.set()

    @staticmethod
    async def _body(receive: Receive) -> dict[str, Any]:
        chunks, more = [], True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        parsed: dict[str, Any] = json.loads(b"".join(chunks))
        return parsed

    @staticmethod
    async def _send(send: Send, status: int, doc: object, headers: dict[str, str] | None = None) -> None:
        raw = json.dumps(doc).encode()
        extra = [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json"), *extra],
            }
        )
        await send({"type": "http.response.body", "body": raw})


def _event(doc: object) -> bytes:
    return b"data: " + json.dumps(doc).encode() + b"\n\n"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def serve(app: ChatServer) -> Iterator[ChatServer]:
    """Run ``app`` on uvicorn in a thread on a free loopback port until the block ends."""
    app.port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=app.port, lifespan="off", log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(500):
            if server.started:
                break
            threading.Event().wait(0.01)
        assert server.started, "chat server did not start"
        yield app
    finally:
        server.should_exit = True
        thread.join(timeout=10)
