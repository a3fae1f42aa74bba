"""Health, readiness, metrics, what the UI offers (models, analysts), sessions and the web page."""

from __future__ import annotations

import logging
import mimetypes
import os
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from services.gateway.auth import CSRF_COOKIE, SESSION_COOKIE, Caller
from services.gateway.metrics import exposition
from services.gateway.problems import Problem
from services.gateway.runtime import Runtime, caller_of, runtime_of
from services.gateway.schemas import SessionRequest
from shared.catalog import ANALYSTS, DATA_PROVIDERS, pipelines
from shared.models import unavailable

logger = logging.getLogger(__name__)

CallerDep = Annotated[Caller, Depends(caller_of)]
RuntimeDep = Annotated[Runtime, Depends(runtime_of)]

PLACEHOLDER = """<!doctype html><html><head><meta charset="utf-8"><title>Tickertape</title></head>
<body><h1>Tickertape</h1><p>The web UI is not built yet. The API is described at
<a href="/docs">/docs</a>.</p></body></html>"""


def build_router() -> APIRouter:
    router = APIRouter()

    @router.get("/healthz", tags=["ops"], summary="Process alive (never touches Redis)")
    async def healthz(runtime: RuntimeDep) -> dict[str, str | int]:
        # `tickertape up` checks it started this process: a worker names its supervisor
        return {"status": "ok", "pid": runtime.settings.supervisor_pid or os.getpid(), "worker": os.getpid()}

    # Only Redis decides readiness: with every projector down the gateway still submits, follows
    # and cancels runs (folded from their streams), so taking it out of rotation would turn a
    # history outage into a full one. The projectors are reported for operators.
    @router.get("/readyz", tags=["ops"], summary="Redis reachable (projectors reported, not required)")
    async def readyz(runtime: RuntimeDep) -> JSONResponse:
        ready = await _redis_ok(runtime)
        body = {
            "status": "ready" if ready else "not ready",
            "checks": {"redis": ready},
            "projectors": runtime.projectors.status(),
        }
        return JSONResponse(body, 200 if ready else 503)

    @router.get("/metrics", tags=["ops"], summary="Prometheus metrics")
    async def prometheus() -> Response:
        return Response(exposition(), media_type=CONTENT_TYPE_LATEST)

    @router.get("/api/trading/models", tags=["catalog"], summary="Models a run may use")
    async def models(runtime: RuntimeDep) -> dict[str, Any]:
        # the gateway's environment stands for the runners': deployments give both the same keys
        items = [
            {
                "id": m.id,
                "label": m.label or m.id,
                "provider": m.provider,
                "promptUsdPerM": m.prompt_usd_per_m,
                "completionUsdPerM": m.completion_usd_per_m,
                "default": m.id == "offline",
                "available": reason is None,
                "reason": reason,
            }
            for m in runtime.models.values()
            for reason in [unavailable(m)]
        ]
        return {"models": sorted(items, key=lambda m: (not m["default"], m["id"]))}

    @router.get("/api/trading/analysts", tags=["catalog"], summary="Analysts a run may select")
    async def analysts() -> dict[str, Any]:
        return {"analysts": [{"id": a.id, "name": a.name, "description": a.description} for a in ANALYSTS]}

    @router.get("/api/trading/pipelines", tags=["catalog"], summary="Pipelines a run may name")
    async def pipeline_list(runtime: RuntimeDep) -> dict[str, Any]:
        # registered pipelines' steps appear as they run: the gateway never imports their modules
        found = pipelines(runtime.settings.pipelines)
        return {
            "pipelines": [{"name": p.name, "steps": p.steps, "builtin": p.target == "builtin"} for p in found]
        }

    @router.get("/api/trading/data", tags=["catalog"], summary="Where runs get their prices by default")
    async def data_source(runtime: RuntimeDep) -> dict[str, Any]:
        provider = runtime.settings.data_provider  # the gateway's environment stands for the runners'
        return {"provider": provider, "demo": provider == "synthetic", "providers": list(DATA_PROVIDERS)}

    _session_routes(router)
    _page_routes(router)
    return router


def _session_routes(router: APIRouter) -> None:
    @router.post(
        "/api/trading/session", tags=["auth"], summary="Exchange an API token or a JWT for a session cookie"
    )
    async def sign_in(body: SessionRequest, runtime: RuntimeDep) -> JSONResponse:
        auth = runtime.auth
        if not auth.enabled:
            return JSONResponse({"userId": "local", "authEnabled": False, "csrfToken": None})
        session = await auth.sign_in(body.token)
        response = JSONResponse(
            {
                "userId": session.user_id,
                "authEnabled": True,
                "csrfToken": session.csrf,
                "expiresAt": session.expires_at,
                "roles": sorted(session.roles),
            }
        )
        # A session made from a JWT ends when the JWT does: the cookie is never the longer-lived.
        secure, max_age = runtime.settings.cookie_secure, max(0, session.expires_at - int(time.time()))
        response.set_cookie(SESSION_COOKIE, session.cookie, max_age=max_age, httponly=True,
                            samesite="strict", secure=secure, path="/")  # fmt: skip
        response.set_cookie(CSRF_COOKIE, session.csrf, max_age=max_age, httponly=False,
                            samesite="strict", secure=secure, path="/")  # fmt: skip
        return response

    @router.get("/api/trading/session", tags=["auth"], summary="Who you are")
    async def whoami(caller: CallerDep, runtime: RuntimeDep, request: Request) -> dict[str, Any]:
        csrf = request.cookies.get(CSRF_COOKIE) if caller.via == "cookie" else None
        enabled = runtime.auth.enabled
        return {"userId": caller.user_id, "authEnabled": enabled, "via": caller.via, "csrfToken": csrf}

    @router.delete("/api/trading/session", tags=["auth"], summary="Sign out (clears the cookies)")
    async def sign_out() -> JSONResponse:
        response = JSONResponse({"signedOut": True})
        response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
        response.delete_cookie(CSRF_COOKIE, path="/", samesite="strict")
        return response


def _page_routes(router: APIRouter) -> None:
    # The page's files are small and local: they are read on the event loop rather than through
    # FileResponse's worker thread, which keeps the gateway single-threaded (CPython 3.11.7 has a
    # race between threads in the AST recursion counter that 3.11 traceback formatting can hit).
    @router.get("/", include_in_schema=False)
    async def index(runtime: RuntimeDep) -> Response:
        page = runtime.settings.static_dir / "index.html"
        return HTMLResponse(page.read_bytes()) if page.is_file() else HTMLResponse(PLACEHOLDER)

    # A share link's page: the same page, which sees the token in its path and shows that run
    # alone (static/share.js); the token is checked by the API calls it makes, not here.
    @router.get("/shared/{token}", include_in_schema=False)
    async def shared_page(runtime: RuntimeDep) -> Response:
        page = await index(runtime)
        page.headers["Referrer-Policy"] = "no-referrer"  # the token is in this page's address
        return page

    @router.get("/static/{path:path}", include_in_schema=False)
    async def static(path: str, runtime: RuntimeDep) -> Response:
        root = runtime.settings.static_dir.resolve()
        target = (root / path).resolve()
        if not target.is_relative_to(root) or not target.is_file():
            raise Problem(404, f"No static file {path!r}.")
        media_type = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        return Response(target.read_bytes(), media_type=media_type)


async def _redis_ok(runtime: Runtime) -> bool:
    try:
        return bool(await runtime.redis.ping())
    except Exception as exc:  # any failure means "not ready", reported, never raised
        logger.warning("readiness: redis ping failed: %s", exc)
        return False
