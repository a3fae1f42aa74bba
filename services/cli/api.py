"""A small synchronous client of the gateway's HTTP API, SSE included."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import httpx

from services.cli.settings import ClientSettings

Json = dict[str, Any]
BASE = "/api/trading"


class ApiError(Exception):
    """The gateway answered with an error, or could not be reached; the message is for a person."""

    def __init__(self, message: str, status: int | None = None, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.field = field


class GatewayDown(ApiError):
    """Nothing answers at the API URL."""


@dataclass(frozen=True, slots=True)
class SseMessage:
    """One server-sent event: ``id`` is the Redis stream ID, ``data`` the decoded JSON."""

    id: str | None
    event: str
    data: Json


def pick(doc: Mapping[str, Any], name: str, default: Any = None) -> Any:
    """A field by its snake_case name, also accepting the camelCase spelling."""
    if name in doc:
        return doc[name]
    head, *rest = name.split("_")
    camel = head + "".join(part.capitalize() for part in rest)
    return doc.get(camel, default)


class Api:
    """Calls to the gateway; raises ApiError with the server's problem detail."""

    def __init__(self, settings: ClientSettings, *, timeout_s: float = 10.0) -> None:
        headers = {"accept": "application/json"}
        if settings.api_token:
            headers["authorization"] = f"Bearer {settings.api_token}"
        self.base_url = settings.api_url
        self.http = httpx.Client(base_url=settings.api_url, headers=headers, timeout=timeout_s)

    def submit(self, body: Json, idempotency_key: str | None = None) -> Json:
        headers = {"idempotency-key": idempotency_key or uuid.uuid4().hex}
        return self._json("POST", f"{BASE}/runs", json=body, headers=headers)

    def models(self) -> Json:
        return self._json("GET", f"{BASE}/models")

    def run(self, run_id: str) -> Json:
        return self._json("GET", f"{BASE}/runs/{run_id}")

    def runs(
        self,
        symbol: str | None = None,
        status: str | None = None,
        limit: int = 20,
        cursor: str | None = None,
        *,
        archived: bool = False,
    ) -> Json:
        params: dict[str, str | int] = {"limit": limit}
        if archived:
            params["archived"] = "true"
        if cursor:
            params["cursor"] = cursor
        if symbol:
            params["symbol"] = symbol
        if status:
            params["status"] = status
        return self._json("GET", f"{BASE}/runs", params=params)

    def cancel(self, run_id: str) -> Json:
        return self._json("DELETE", f"{BASE}/runs/{run_id}")

    def fork(self, run_id: str, body: Json) -> Json:
        return self._json("POST", f"{BASE}/runs/{run_id}/fork", json=body)

    def diff(self, run_a: str, run_b: str) -> Json:
        return self._json("GET", f"{BASE}/runs/{run_a}/diff/{run_b}")

    def share(self, run_id: str, expires_in_s: int | None) -> Json:
        body = {} if expires_in_s is None else {"expiresInS": expires_in_s}
        return self._json("POST", f"{BASE}/runs/{run_id}/shares", json=body)

    def revoke_share(self, run_id: str, share_id: str) -> Json:
        return self._json("DELETE", f"{BASE}/runs/{run_id}/shares/{share_id}")

    def events(self, run_id: str, last_event_id: str | None) -> Iterator[SseMessage]:
        """The run's events after ``last_event_id`` (all of them when None), until the stream ends."""
        headers = {"accept": "text/event-stream"}
        if last_event_id:
            headers["last-event-id"] = last_event_id
        timeout = httpx.Timeout(10.0, read=60.0)
        try:
            with self.http.stream(
                "GET", f"{BASE}/runs/{run_id}/events", headers=headers, timeout=timeout
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    raise self._error(response)
                yield from parse_sse(response.iter_lines())
        except httpx.TransportError as exc:
            raise GatewayDown(f"lost the connection to {self.base_url}: {exc}") from exc

    def _json(self, method: str, url: str, **kwargs: Any) -> Json:
        try:
            response = self.http.request(method, url, **kwargs)
        except httpx.TransportError as exc:
            raise GatewayDown(
                f"cannot reach the gateway at {self.base_url} ({exc.__class__.__name__}). "
                "Is Tickertape running? Start it with `tickertape up`, or set TT_API_URL."
            ) from exc
        if response.status_code >= 400:
            raise self._error(response)
        if not response.content:
            return {}
        body: Json = response.json()
        return body

    def _error(self, response: httpx.Response) -> ApiError:
        try:
            problem = response.json()
        except ValueError:
            problem = {}
        if not isinstance(problem, dict):
            problem = {}
        detail = problem.get("detail") or problem.get("title") or response.reason_phrase
        field = _failing_field(problem)
        message = f"{response.status_code} {problem.get('title') or response.reason_phrase}: {detail}"
        return ApiError(message, response.status_code, field)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Api:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _failing_field(problem: Json) -> str | None:
    field = problem.get("field")
    if isinstance(field, str):
        return field
    errors = problem.get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        found = errors[0].get("field") or errors[0].get("loc")
        return str(found) if found is not None else None
    return None


def parse_sse(lines: Iterator[str]) -> Iterator[SseMessage]:
    """Messages of a ``text/event-stream``; comments (heartbeats) are skipped."""
    event_id: str | None = None
    event, data = "message", list[str]()
    for line in lines:
        if not line:
            if data or event != "message":
                yield SseMessage(event_id, event, _decode(data) if data else {})
            event_id, event, data = None, "message", list[str]()
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "id":
            event_id = value
        elif name == "event":
            event = value
        elif name == "data":
            data.append(value)


def _decode(data: list[str]) -> Json:
    try:
        doc = json.loads("\n".join(data))
    except ValueError:
        return {"raw": "\n".join(data)}
    return doc if isinstance(doc, dict) else {"value": doc}
