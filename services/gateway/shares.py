"""Share links: a read-only, unguessable, expiring, revocable link to one run (docs/api.md).

The link is ``/api/trading/shared/{runId}.{shareId}.{secret}``. The run's events record the
share (``ShareCreated``: id, expiry and the SHA-256 of the secret, never the secret) and its
revocation (``ShareRevoked``); whoever holds the link reads the run as its owner would, and
nothing else: no other run, no cancel, no webhook or share details.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import secrets
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.types import Message, Receive, Scope, Send

from services.gateway.auth import Caller
from services.gateway.problems import not_found
from services.gateway.runs import conditional, etag_of
from services.gateway.runtime import Runtime, caller_of, runtime_of
from services.gateway.schemas import state_view
from services.gateway.sse import stream_events
from shared.events import ShareCreated, ShareRevoked
from shared.ids import is_run_id
from shared.run_state import RunState, ShareState
from shared.store import Refused
from shared.telemetry import current_traceparent

CallerDep = Annotated[Caller, Depends(caller_of)]
RuntimeDep = Annotated[Runtime, Depends(runtime_of)]
MAX_EXPIRY_S = 30 * 86400


class ShareRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    expires_in_s: int | None = Field(
        None, alias="expiresInS", ge=60, le=MAX_EXPIRY_S, description="seconds; none: until revoked"
    )


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _live(share: ShareState, now: datetime) -> bool:
    return share.revoked_at is None and (share.expires_at is None or share.expires_at > now)


async def _owned(runtime: Runtime, caller: Caller, run_id: str) -> RunState:
    state = await runtime.runs.get(run_id, caller.user_id) if is_run_id(run_id) else None
    if state is None:
        raise not_found(run_id)
    return state


async def shared_state(runtime: Runtime, token: str) -> tuple[str, RunState]:
    """(owner, state) of the run a live share token names; 404 for anything else."""
    run_id, _, rest = token.partition(".")
    share_id, _, secret = rest.partition(".")
    owner = await runtime.store.owner(run_id) if is_run_id(run_id) and secret else ""
    state = await runtime.runs.get(run_id, owner) if owner else None
    now = datetime.now(UTC)
    for share in state.shares if state else ():
        if share.share_id == share_id and hmac.compare_digest(share.token_sha256, _digest(secret)):
            if state is not None and _live(share, now):
                return owner, state
    raise not_found("shared")


class _Revoked(Exception):
    pass


class Revocable(Response):
    """A shared run's event stream that ends when its share is revoked: the frame of the
    ``ShareRevoked`` event naming this share is followed by a ``revoked`` event and the end."""

    def __init__(self, inner: Response, share_id: str) -> None:
        self.inner, self.share_id = inner, share_id
        self.status_code, self.background = inner.status_code, None
        self.raw_headers = inner.raw_headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def watched(message: Message) -> None:
            await send(message)
            body = message.get("body", b"")
            if message.get("more_body") and b"event: ShareRevoked" in body and self._revokes(body):
                end = b'event: revoked\ndata: {"reason": "the share link was revoked"}\n\n'
                await send({"type": "http.response.body", "body": end, "more_body": False})
                raise _Revoked

        with contextlib.suppress(_Revoked):
            await self.inner(scope, receive, watched)

    def _revokes(self, body: bytes) -> bool:
        """Whether a frame in ``body`` is the ShareRevoked event of this share (the event's own
        ``shareId``, not one in the state snapshot beside it)."""
        for frame in body.split(b"\n\n"):
            lines = dict(line.split(b": ", 1) for line in frame.split(b"\n") if b": " in line)
            if lines.get(b"event") == b"ShareRevoked" and b"data" in lines:
                if json.loads(lines[b"data"]).get("event", {}).get("shareId") == self.share_id:
                    return True
        return False


def build_router(base: str) -> APIRouter:
    router = APIRouter(tags=["shares"])

    @router.post("/runs/{run_id}/shares", status_code=201, summary="Make a read-only link to your run")
    async def create_share(
        run_id: str, caller: CallerDep, runtime: RuntimeDep, body: ShareRequest | None = None
    ) -> JSONResponse:
        await _owned(runtime, caller, run_id)
        share_id, secret = secrets.token_hex(8), secrets.token_urlsafe(24)
        expires = None
        if body is not None and body.expires_in_s is not None:
            expires = datetime.now(UTC) + timedelta(seconds=body.expires_in_s)
        event = ShareCreated(
            run_id=run_id, share_id=share_id, user_id=caller.user_id, token_sha256=_digest(secret),
            expires_at=expires, traceparent=current_traceparent(),
        )  # fmt: skip
        try:
            await runtime.store.append(event)
        except Refused as exc:
            raise not_found(run_id) from exc
        token = f"{run_id}.{share_id}.{secret}"
        doc: dict[str, Any] = {"shareId": share_id, "url": f"{base}/shared/{token}", "token": token}
        doc["pageUrl"] = f"/shared/{token}"  # the page a person opens (meta.py serves it)
        doc["expiresAt"] = expires.isoformat() if expires else None
        return JSONResponse(doc, status_code=201)

    @router.delete("/runs/{run_id}/shares/{share_id}", status_code=204, summary="Revoke a share link")
    async def revoke_share(run_id: str, share_id: str, caller: CallerDep, runtime: RuntimeDep) -> Response:
        state = await _owned(runtime, caller, run_id)
        share = next((s for s in state.shares if s.share_id == share_id), None)
        if share is None:
            raise not_found(share_id)
        if share.revoked_at is None:
            event = ShareRevoked(run_id=run_id, share_id=share_id, user_id=caller.user_id)
            await runtime.store.append(event)
        return Response(status_code=204)

    @router.get("/shared/{token}", summary="A shared run, read-only (no credentials needed)")
    async def get_shared(token: str, request: Request, runtime: RuntimeDep) -> Response:
        _, state = await shared_state(runtime, token)
        return conditional(request, etag_of(state), lambda: state_view(state))

    @router.get(
        "/shared/{token}/events",
        summary="A shared run's server-sent events (resumable)",
        response_class=Response,
        responses={200: {"content": {"text/event-stream": {}}}},
    )
    async def shared_events(
        token: str,
        runtime: RuntimeDep,
        after: Annotated[str | None, Query(max_length=41)] = None,
        last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=41)] = None,
    ) -> Response:
        owner, state = await shared_state(runtime, token)
        inner = await stream_events(runtime, Caller(owner, "anonymous"), state.run_id, after, last_event_id)
        return Revocable(inner, token.split(".")[1])

    return router
