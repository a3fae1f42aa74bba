"""The HTTP face: ``POST /v1/chat/completions`` (plain or streamed), ``GET /v1/models``,
``GET /stats`` (what was simulated, for benchmarks) and ``GET /healthz``."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from services.llmsim.model import Plan, Planner, SimSettings, json_answer, tool_arguments

CHUNK_TOKENS = 8
"""Tokens per streamed chunk: a chunk per token would cost a timer per token at thousands of calls."""


class BadRequest(Exception):
    def __init__(self, field_name: str, detail: str) -> None:
        super().__init__(detail)
        self.field_name = field_name


@dataclass(slots=True)
class Stats:
    """Totals since start; ``simulated_s`` sums the planned time of answered calls."""

    statuses: Counter[int] = field(default_factory=Counter)
    simulated_s: float = 0.0
    completion_tokens: int = 0
    in_flight: int = 0
    peak_in_flight: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": sum(self.statuses.values()),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "simulated_s": round(self.simulated_s, 6),
            "completion_tokens": self.completion_tokens,
            "in_flight": self.in_flight,
            "peak_in_flight": self.peak_in_flight,
        }


@dataclass(frozen=True, slots=True)
class Call:
    """A parsed request: what shapes the answer."""

    model: str
    prompt: str
    prompt_tokens: int
    max_tokens: int | None
    stream: bool
    include_usage: bool
    json_mode: bool
    tool: dict[str, Any] | None


def parse_call(doc: Any) -> Call:
    """The request body checked field by field; a bad one raises BadRequest naming the field."""
    if not isinstance(doc, dict):
        raise BadRequest("body", "the body must be a JSON object")
    messages = doc.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        raise BadRequest("messages", "messages must be a non-empty list of objects")
    limit = doc.get("max_completion_tokens", doc.get("max_tokens"))
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise BadRequest("max_tokens", "max_tokens must be a positive integer")
    prompt = "\n".join(str(m.get("content") or "") for m in messages)
    fmt = doc.get("response_format") or {}
    return Call(
        model=str(doc.get("model") or "llmsim"),
        prompt=str(messages[-1].get("content") or ""),
        prompt_tokens=max(1, (len(prompt) + 3) // 4),
        max_tokens=limit,
        stream=doc.get("stream") is True,
        include_usage=bool((doc.get("stream_options") or {}).get("include_usage")),
        json_mode=isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema"),
        tool=chosen_tool(doc, messages),
    )


def chosen_tool(doc: dict[str, Any], messages: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The tool to call: the named one, else the first; none once a tool result came back."""
    tools, choice = doc.get("tools") or [], doc.get("tool_choice", "auto")
    if not tools or choice == "none" or messages[-1].get("role") == "tool":
        return None
    if not isinstance(tools, list) or not all(isinstance(t, dict) and "function" in t for t in tools):
        raise BadRequest("tools", "tools must be a list of {type: function, function: {...}}")
    if isinstance(choice, dict):
        wanted = (choice.get("function") or {}).get("name")
        named = [t for t in tools if t["function"].get("name") == wanted]
        if not named:
            raise BadRequest("tool_choice", f"tool_choice names {wanted!r}, which is not in tools")
        return dict(named[0]["function"])
    return dict(tools[0]["function"])


class Simulator:
    """The handlers around one Planner and its Stats."""

    def __init__(self, settings: SimSettings) -> None:
        self.settings = settings
        self.planner = Planner(settings)
        self.stats = Stats()

    async def completions(self, request: Request) -> Response:
        raw = await request.body()
        try:
            call = parse_call(json.loads(raw or b"null"))
        except json.JSONDecodeError:
            return problem(400, "body", "the body is not JSON")
        except BadRequest as exc:
            return problem(400, exc.field_name, str(exc))
        plan = self.planner.plan(raw, call.max_tokens)
        self.stats.statuses[plan.status] += 1
        if plan.status != 200:
            return fault(plan.status, self.settings.retry_after_s)
        self.stats.simulated_s += plan.duration_s
        self.stats.completion_tokens += plan.tokens
        if call.stream:
            return StreamingResponse(self._tracked(stream(call, plan)), media_type="text/event-stream")
        async with self._in_flight():
            await asyncio.sleep(plan.duration_s)
        return Response(json.dumps(whole(call, plan)), media_type="application/json")

    async def _tracked(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        async with self._in_flight():
            async for chunk in chunks:
                yield chunk

    def _in_flight(self) -> _InFlight:
        return _InFlight(self.stats)

    async def stats_view(self, request: Request) -> Response:
        return JSONResponse({**self.stats.as_dict(), "mean_call_s": self.settings.mean_call_s()})

    async def models(self, request: Request) -> Response:
        return JSONResponse(
            {"object": "list", "data": [{"id": "llmsim", "object": "model", "owned_by": "llmsim"}]}
        )


class _InFlight:
    def __init__(self, stats: Stats) -> None:
        self.stats = stats

    async def __aenter__(self) -> None:
        self.stats.in_flight += 1
        self.stats.peak_in_flight = max(self.stats.peak_in_flight, self.stats.in_flight)

    async def __aexit__(self, *exc: object) -> None:
        self.stats.in_flight -= 1


def problem(status: int, field_name: str, detail: str) -> Response:
    body = {
        "type": "about:blank",
        "title": "Bad Request",
        "status": status,
        "detail": detail,
        "field": field_name,
    }
    return JSONResponse(body, status_code=status, media_type="application/problem+json")


def fault(status: int, retry_after_s: float) -> Response:
    """An injected failure shaped like a provider's (OpenAI's error object)."""
    kind = "rate_limit_exceeded" if status == 429 else "server_error"
    body = {"error": {"message": f"simulated {status}", "type": kind, "code": kind}}
    headers = {"retry-after": f"{retry_after_s:g}"} if status == 429 else {}
    return JSONResponse(body, status_code=status, headers=headers)


def content(call: Call, plan: Plan) -> str:
    return json_answer(call.prompt) if call.json_mode else " ".join(plan.words)


def usage(call: Call, plan: Plan) -> dict[str, int]:
    return {"prompt_tokens": call.prompt_tokens, "completion_tokens": plan.tokens,
            "total_tokens": call.prompt_tokens + plan.tokens}  # fmt: skip


def tool_call(call: Call) -> dict[str, Any]:
    assert call.tool is not None
    arguments = json.dumps(tool_arguments(call.tool.get("parameters") or {}))
    return {"id": f"call_{secrets.token_hex(6)}", "type": "function",
            "function": {"name": call.tool.get("name", ""), "arguments": arguments}}  # fmt: skip


def whole(call: Call, plan: Plan) -> dict[str, Any]:
    """A non-streamed ``chat.completion``."""
    message: dict[str, Any] = {"role": "assistant", "content": None if call.tool else content(call, plan)}
    if call.tool:
        message["tool_calls"] = [tool_call(call)]
    finish = "tool_calls" if call.tool else "stop"
    return {"id": f"chatcmpl-{secrets.token_hex(8)}", "object": "chat.completion",
            "created": int(time.time()), "model": call.model, "usage": usage(call, plan),
            "choices": [{"index": 0, "message": message, "finish_reason": finish}]}  # fmt: skip


async def stream(call: Call, plan: Plan) -> AsyncIterator[bytes]:
    """``chat.completion.chunk`` frames: the first after TTFT, then CHUNK_TOKENS at a time."""
    head = {"id": f"chatcmpl-{secrets.token_hex(8)}", "object": "chat.completion.chunk",
            "created": int(time.time()), "model": call.model}  # fmt: skip

    def frame(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
        doc = {**head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
        return b"data: " + json.dumps(doc).encode() + b"\n\n"

    await asyncio.sleep(plan.ttft_s)
    yield frame({"role": "assistant", "content": ""})
    if call.tool:
        yield frame({"tool_calls": [{"index": 0, **tool_call(call)}]})
    else:
        async for piece in pieces(content(call, plan), plan):
            yield frame({"content": piece})
    yield frame({}, "tool_calls" if call.tool else "stop")
    if call.include_usage:
        yield b"data: " + json.dumps({**head, "choices": [], "usage": usage(call, plan)}).encode() + b"\n\n"
    yield b"data: [DONE]\n\n"


async def pieces(text: str, plan: Plan) -> AsyncIterator[str]:
    """``text`` cut into ``plan.tokens`` even parts, CHUNK_TOKENS of them at the planned rate."""
    step = max(1, -(-len(text) // plan.tokens))
    parts = [text[i : i + step] for i in range(0, len(text), step)] or [""]
    for start in range(0, len(parts), CHUNK_TOKENS):
        group = parts[start : start + CHUNK_TOKENS]
        await asyncio.sleep(len(group) / plan.tokens_per_s)
        yield "".join(group)


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


def build_app(settings: SimSettings) -> Starlette:
    sim = Simulator(settings)
    app = Starlette(routes=[
        Route("/v1/chat/completions", sim.completions, methods=["POST"]),
        Route("/chat/completions", sim.completions, methods=["POST"]),
        Route("/v1/models", sim.models),
        Route("/stats", sim.stats_view),
        Route("/healthz", healthz),
    ])  # fmt: skip
    app.state.simulator = sim
    return app
