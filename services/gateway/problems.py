"""Every error the gateway answers (RFC 9457, built by ``shared.problems``) and the handlers."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from shared.problems import PROBLEM_JSON, problem_doc

logger = logging.getLogger(__name__)

REDIS_RETRY_AFTER_S = 2


class Problem(Exception):
    """An error answered as problem+json; ``slug`` names its type."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        slug: str | None = None,
        title: str | None = None,
        field: str | None = None,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.slug = slug
        self.title = title
        self.field = field
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})

    def body(self, instance: str | None = None) -> dict[str, Any]:
        return problem_doc(
            self.status,
            self.detail,
            slug=self.slug,
            title=self.title,
            instance=instance,
            field=self.field,
            extra=self.extra,
        )

    def response(self, instance: str | None = None) -> JSONResponse:
        return JSONResponse(
            self.body(instance), status_code=self.status, headers=self.headers, media_type=PROBLEM_JSON
        )


def not_found(run_id: str) -> Problem:
    return Problem(404, f"No run {run_id} is visible to you: check the id (runs expire after history).")


def invalid(field: str, detail: str, **extra: Any) -> Problem:
    return Problem(422, detail, field=field, extra={"errors": [{"field": field, "message": detail}], **extra})


def field_name(loc: Sequence[int | str]) -> str:
    """Pydantic's location as a person reads it: ("body", "analysts", 2) → ``analysts[2]``."""
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path", "header", "cookie"):
        where = parts.pop(0)
        if where == "header" and parts:
            return "-".join(p.capitalize() for p in str(parts[0]).split("-"))
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "body"


def _message(error: Mapping[str, Any]) -> str:
    kind = error.get("type", "")
    if kind == "extra_forbidden":
        return "unknown field (not part of this request's schema)"
    if kind == "missing":
        return "field required"
    if kind == "json_invalid":
        return f"body is not valid JSON: {error.get('ctx', {}).get('error', 'parse error')}"
    return str(error.get("msg", "invalid value")).removeprefix("Value error, ")


def _field_of(error: Mapping[str, Any]) -> str:
    if error.get("type") == "json_invalid":
        return "body"
    return field_name(error.get("loc", ()))


def validation_problem(errors: Sequence[Mapping[str, Any]]) -> Problem:
    items = [{"field": _field_of(e), "message": _message(e)} for e in errors]
    first = items[0] if items else {"field": "body", "message": "invalid request"}
    detail = "; ".join(f"{i['field']}: {i['message']}" for i in items) or "invalid request"
    return Problem(422, detail, field=first["field"], extra={"errors": items})


def store_unavailable(method: str, path: str, exc: Exception) -> Problem:
    """Redis is down or loading: 503 with Retry-After (logged, without the request's body)."""
    logger.warning("redis unavailable on %s %s: %s", method, path, exc)
    detail = "The event store (Redis) is unreachable or still loading. Retry (with the same Idempotency-Key)."
    return Problem(503, detail, slug="store-unavailable", headers={"Retry-After": str(REDIS_RETRY_AFTER_S)})


def unexpected(method: str, path: str) -> Problem:
    """A bug: logged with its traceback (call from an ``except``), answered as a plain 500."""
    logger.exception("unhandled error on %s %s", method, path)
    return Problem(500, "The gateway failed unexpectedly; the error was logged. Try again.")


def install(app: FastAPI) -> None:
    """Answer every error (ours, FastAPI's validation, Starlette's HTTP errors) as problem+json."""

    async def on_problem(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, Problem)
        return exc.response(request.url.path)

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return validation_problem(list(exc.errors())).response(request.url.path)

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"No route {request.method} {request.url.path}: see /docs for the API."
        if exc.status_code == 405:
            detail = f"{request.method} is not allowed on {request.url.path}: see /docs."
        return Problem(exc.status_code, detail, headers=exc.headers).response(request.url.path)

    async def on_redis_down(request: Request, exc: Exception) -> JSONResponse:
        return store_unavailable(request.method, request.url.path, exc).response(request.url.path)

    async def on_error(request: Request, exc: Exception) -> JSONResponse:
        return unexpected(request.method, request.url.path).response(request.url.path)

    app.add_exception_handler(Problem, on_problem)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(RedisConnectionError, on_redis_down)  # includes BusyLoadingError
    app.add_exception_handler(RedisTimeoutError, on_redis_down)
    app.add_exception_handler(Exception, on_error)
