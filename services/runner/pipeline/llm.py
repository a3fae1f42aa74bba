"""Chat models behind one interface, and the OpenAI-compatible client on httpx.

Transient failures (429, 5xx, timeouts, dropped connections) are retried with exponential
backoff and jitter, honouring ``Retry-After``; permanent ones raise a PipelineError whose code
says what to fix. Cancelling the calling task aborts the HTTP request.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Literal, Protocol, runtime_checkable

import httpx
import msgspec

from services.runner.pipeline.base import PipelineError
from shared.models import ModelSpec

logger = logging.getLogger(__name__)

TRANSIENT_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
_JSON = msgspec.json.Encoder()


class Message(msgspec.Struct, frozen=True):
    role: Literal["system", "user", "assistant", "tool"]
    content: str
    tool_calls: list[dict[str, Any]] | None = None
    """An assistant message's calls, as the server sent them (answered by ``tool`` messages)."""
    tool_call_id: str | None = None

    def wire(self) -> dict[str, Any]:
        """The message as the chat-completions API takes it (absent fields left out, not null)."""
        return {k: v for k, v in msgspec.structs.asdict(self).items() if v is not None}


class ChatRequest(msgspec.Struct, frozen=True, kw_only=True):
    """One call: the messages a real model reads, and the facts the offline writer reads."""

    task: str
    messages: list[Message]
    facts: dict[str, Any] = {}
    max_tokens: int = 600
    json: bool = False
    tools: list[dict[str, Any]] = []
    """OpenAI-style function tools the model may call (real models only)."""


class Completion(msgspec.Struct, frozen=True, kw_only=True):
    text: str
    prompt_tokens: int
    completion_tokens: int
    tool_calls: list[dict[str, Any]] = []


class ChatModel(Protocol):
    async def complete(self, request: ChatRequest) -> Completion: ...


TextSink = Callable[[str], Awaitable[None]]
"""Receives the text written so far while a streamed answer arrives."""
STREAM_EVERY_S = 0.25
"""At most four partial-text reports a second: live enough to watch, few enough events."""


@runtime_checkable
class StreamingChat(Protocol):
    async def stream(self, request: ChatRequest, sink: TextSink) -> Completion: ...


def estimate_tokens(text: str) -> int:
    """A rough count (about four characters a token) where a server reports no usage."""
    return max(1, (len(text) + 3) // 4)


class _Usage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0


class _ChoiceMessage(msgspec.Struct):
    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None


class _Choice(msgspec.Struct):
    message: _ChoiceMessage


class _ChatResponse(msgspec.Struct):
    choices: list[_Choice]
    usage: _Usage | None = None


class _Transient(Exception):
    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


def retry_after_s(headers: httpx.Headers) -> float | None:
    """Seconds a server asked us to wait (delta-seconds form only)."""
    value = headers.get("retry-after")
    try:
        return max(float(value), 0.0) if value is not None else None
    except ValueError:
        return None


class RetryPolicy(msgspec.Struct, frozen=True, kw_only=True):
    retries: int = 4
    base_s: float = 0.5
    max_s: float = 20.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Exponential backoff with equal jitter; a server's Retry-After wins (up to max_s)."""
        if retry_after is not None:
            return float(min(retry_after, self.max_s))
        ceiling = min(self.max_s, self.base_s * 2**attempt)
        return float(ceiling / 2 + random.uniform(0, ceiling / 2))


class OpenAIChat:
    """Any OpenAI-compatible ``/chat/completions`` endpoint (OpenAI, xAI, OpenRouter, Ollama…)."""

    def __init__(
        self,
        spec: ModelSpec,
        http: httpx.AsyncClient,
        *,
        timeout_s: float,
        policy: RetryPolicy,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.spec, self.http, self.policy = spec, http, policy
        self.timeout_s = spec.timeout_s or timeout_s
        self.url = httpx.URL(spec.base_url.rstrip("/") + "/chat/completions")  # parsed once, not per call
        self._headers = self._auth_headers(environ)
        self._decoder = msgspec.json.Decoder(_ChatResponse)

    def _auth_headers(self, environ: Mapping[str, str] | None) -> dict[str, str]:
        key = self.spec.api_key(environ)
        if self.spec.api_key_env and key is None:
            raise PipelineError(
                "llm_config", f"model {self.spec.id!r} needs the environment variable {self.spec.api_key_env}"
            )
        json_body = {"content-type": "application/json"}  # the body is encoded by msgspec
        return {**json_body, "authorization": f"Bearer {key}"} if key else json_body

    async def complete(self, request: ChatRequest) -> Completion:
        body = self._body(request)
        for attempt in range(self.policy.retries + 1):
            try:
                return await self._post(body)
            except _Transient as exc:
                if attempt == self.policy.retries:
                    raise PipelineError(
                        "llm_unavailable",
                        f"model {self.spec.id!r} failed after {attempt + 1} attempts: {exc}",
                        transient=True,
                    ) from exc
                delay = self.policy.delay(attempt, exc.retry_after)
                logger.warning(
                    "llm call failed, retrying",
                    extra={"model": self.spec.id, "reason": str(exc), "delay_s": round(delay, 3)},
                )
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def stream(self, request: ChatRequest, sink: TextSink) -> Completion:
        """The answer streamed as server-sent chunks, the text so far passed to ``sink`` a few
        times a second. Not retried once text has arrived: a retry would rewrite what was shown."""
        body = {**self._body(request), "stream": True, "stream_options": {"include_usage": True}}
        parts: list[str] = []
        usage = _Usage()
        last = 0.0
        try:
            async with self.http.stream(
                "POST", self.url, content=_JSON.encode(body), headers=self._headers, timeout=self.timeout_s
            ) as response:
                if response.status_code != 200:
                    await response.aread()
                    return await self._fallback(request, response)
                if "text/event-stream" not in response.headers.get("content-type", ""):
                    await response.aread()  # a server that ignores "stream": one whole answer
                    return self._completion(response, body)
                async for chunk in _chunks(response.aiter_bytes()):
                    usage = chunk.usage or usage
                    parts.extend(c.delta.content for c in chunk.choices if c.delta.content)
                    if parts and time.monotonic() - last >= STREAM_EVERY_S:
                        last = time.monotonic()
                        await sink("".join(parts))
        except (httpx.TimeoutException, httpx.TransportError) as exc:
            if parts:
                raise PipelineError("llm_unavailable", f"stream broke: {exc}", transient=True) from exc
            return await self.complete(request)
        text = "".join(parts)
        await sink(text)
        prompt = usage.prompt_tokens or _prompt_estimate(body)
        return Completion(
            text=text,
            prompt_tokens=prompt,
            completion_tokens=usage.completion_tokens or estimate_tokens(text),
        )

    async def _fallback(self, request: ChatRequest, response: httpx.Response) -> Completion:
        """A refused stream: transient statuses go through the retrying path, others raise."""
        if response.status_code in TRANSIENT_STATUS:
            return await self.complete(request)
        self._raise_permanent(response)
        raise AssertionError("unreachable")

    def _body(self, request: ChatRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.spec.model,
            "messages": [m.wire() for m in request.messages],
            "max_tokens": min(request.max_tokens, self.spec.max_tokens),
            "temperature": 0.2,
        }
        if request.json and self.spec.json_mode:
            body["response_format"] = {"type": "json_object"}
        if request.tools:
            body["tools"] = request.tools
        return body

    async def _post(self, body: dict[str, Any]) -> Completion:
        try:
            response = await self.http.post(
                self.url, content=_JSON.encode(body), headers=self._headers, timeout=self.timeout_s
            )
        except httpx.TimeoutException as exc:
            raise _Transient(f"timed out after {self.timeout_s}s") from exc
        except httpx.TransportError as exc:
            raise _Transient(f"connection failed: {type(exc).__name__}") from exc
        if response.status_code in TRANSIENT_STATUS:
            raise _Transient(f"HTTP {response.status_code}", retry_after_s(response.headers))
        self._raise_permanent(response)
        return self._completion(response, body)

    def _raise_permanent(self, response: httpx.Response) -> None:
        status = response.status_code
        if status in (401, 403):
            raise PipelineError(
                "llm_auth", f"model {self.spec.id!r}: HTTP {status}, check {self.spec.api_key_env}"
            )
        if status >= 400:
            detail = response.text[:300]
            raise PipelineError("llm_rejected", f"model {self.spec.id!r}: HTTP {status}: {detail}")

    def _completion(self, response: httpx.Response, body: dict[str, Any]) -> Completion:
        try:
            parsed = self._decoder.decode(response.content)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise _Transient(f"unreadable response: {exc}") from exc
        if not parsed.choices:
            raise _Transient("response without choices")
        message = parsed.choices[0].message
        text = message.content or ""
        usage = parsed.usage
        prompt = usage.prompt_tokens if usage and usage.prompt_tokens else _prompt_estimate(body)
        completion = usage.completion_tokens if usage and usage.completion_tokens else estimate_tokens(text)
        return Completion(
            text=text, prompt_tokens=prompt, completion_tokens=completion, tool_calls=message.tool_calls or []
        )


class _Delta(msgspec.Struct):
    content: str | None = None


class _StreamChoice(msgspec.Struct):
    delta: _Delta = msgspec.field(default_factory=_Delta)


class _Chunk(msgspec.Struct):
    choices: list[_StreamChoice] = []
    usage: _Usage | None = None


async def _chunks(body: AsyncIterator[bytes]) -> AsyncIterator[_Chunk]:
    """The ``data:`` lines of a chat-completions stream, decoded, until ``[DONE]``; the body is
    read to its end even so, or the connection would be closed instead of reused. Lines are split
    from the raw bytes and decoded by msgspec: httpx's text and line decoders cost more than the
    JSON of a chunk."""
    decoder = msgspec.json.Decoder(_Chunk)
    done, rest = False, b""
    async for received in body:
        if done:
            continue
        lines = (rest + received).split(b"\n")
        rest = lines.pop()
        for line in lines:
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                done = True
                break
            try:
                yield decoder.decode(data)
            except (msgspec.ValidationError, msgspec.DecodeError):
                continue  # a keep-alive or vendor extra: not text


def _prompt_estimate(body: dict[str, Any]) -> int:
    return sum(estimate_tokens(str(m["content"])) for m in body["messages"])
