"""Reading runs: the projector's read model when it is current, else a fold of the run stream."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
import msgspec

from services.gateway.hub import parse_id
from shared.reducer import RunState
from shared.store import EventStore

logger = logging.getLogger(__name__)


class ProjectorUnavailable(Exception):
    """The projector did not answer (down, slow or erroring)."""


class BadCursor(Exception):
    """The projector refused the pagination cursor."""


class RunPage(msgspec.Struct, kw_only=True):
    runs: list[RunState]
    next_cursor: str | None = None


class RunReader:
    """Answers for one run or a page of runs, always scoped to the caller's user id."""

    def __init__(self, store: EventStore, projector: httpx.AsyncClient) -> None:
        self.store = store
        self.projector = projector
        self._state = msgspec.json.Decoder(RunState)
        self._page = msgspec.json.Decoder(RunPage)

    async def get(self, run_id: str, user_id: str) -> RunState | None:
        """The run as its owner sees it, or None (unknown, expired, or someone else's)."""
        projected, last_id = await asyncio.gather(self._projected(run_id, user_id), self._last_id(run_id))
        if projected is not None and (not last_id or parse_id(projected.last_event_id) >= parse_id(last_id)):
            return projected
        if not last_id:
            return None
        folded = await self.store.state(run_id)
        if folded is None or folded.user_id != user_id:
            return None
        return folded

    async def list(self, user_id: str, params: dict[str, Any]) -> RunPage:
        query = {"user_id": user_id, **{k: v for k, v in params.items() if v is not None}}
        try:
            response = await self.projector.get("/internal/runs", params=query)
        except httpx.HTTPError as exc:
            raise ProjectorUnavailable(str(exc)) from exc
        if response.status_code == 422:
            raise BadCursor(response.text[:200])
        if response.status_code != 200:
            raise ProjectorUnavailable(f"projector answered {response.status_code}: {response.text[:200]}")
        return self._page.decode(response.content)

    async def ready(self) -> bool:
        try:
            response = await self.projector.get("/healthz")
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    async def _projected(self, run_id: str, user_id: str) -> RunState | None:
        try:
            response = await self.projector.get(f"/internal/runs/{run_id}", params={"user_id": user_id})
        except httpx.HTTPError as exc:
            logger.debug("projector unreachable for run %s: %s", run_id, exc)
            return None
        if response.status_code != 200:
            return None
        try:
            state = self._state.decode(response.content)
        except msgspec.DecodeError:
            logger.warning("projector sent an undecodable run %s", run_id)
            return None
        return state if state.user_id in ("", user_id) else None

    async def _last_id(self, run_id: str) -> str:
        raw = await self.store.redis.xrevrange(self.store.keys.run(run_id), count=1)
        if not raw:
            return ""
        entry_id = raw[0][0]
        return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
