"""Reading runs: a projector's read model when it is current, else a fold of the run stream."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import msgspec

from services.gateway.projectors import ProjectorPool
from services.gateway.projectors import ProjectorUnavailable as ProjectorUnavailable
from shared import streamids
from shared.ids import is_run_id
from shared.reducer import fold_onto
from shared.run_state import RunState
from shared.store import EventStore

logger = logging.getLogger(__name__)


class BadCursor(Exception):
    """The projector refused the pagination cursor."""


class RunPage(msgspec.Struct, kw_only=True):
    runs: list[RunState]
    next_cursor: str | None = None


class RunReader:
    """Answers for one run or a page of runs, always scoped to the caller's user id."""

    def __init__(self, store: EventStore, projectors: ProjectorPool) -> None:
        self.store = store
        self.projectors = projectors
        self._state = msgspec.json.Decoder(RunState)
        self._page = msgspec.json.Decoder(RunPage)

    async def get(self, run_id: str, user_id: str) -> RunState | None:
        """The run as its owner sees it, or None (unknown, expired, or someone else's).

        Raises ProjectorUnavailable only when the run stream is gone, or lost its start to a trim,
        and no projector answered: "not found" would be a guess.
        """
        (projected, answered), last_id = await asyncio.gather(
            self._projected(run_id, user_id), self._last_id(run_id)
        )
        if projected is not None:
            if not last_id or not streamids.after(last_id, projected.last_event_id):
                return projected
            # The read model lags the stream: its state, brought up to date with what followed
            # (folding the stream alone is wrong once a trim took its start away).
            return fold_onto(projected, await self.store.read(run_id, after=projected.last_event_id))
        if last_id:
            folded = await self.store.state(run_id)
            if folded is not None and folded.user_id:  # the whole stream: it says whose run it is
                return folded if folded.user_id == user_id else None
            if answered:
                return None
            raise ProjectorUnavailable("its run stream lost its start and no projector answered")
        if answered or self._younger_than_streams(run_id):
            return None
        raise ProjectorUnavailable("its run stream has expired and no projector answered")

    async def list(self, user_id: str, params: dict[str, Any]) -> RunPage:
        query = {"user_id": user_id, **{k: v for k, v in params.items() if v is not None}}
        response = await self.projectors.get("/internal/runs", query)
        if response.status_code == 422:
            raise BadCursor(response.text[:200])
        if response.status_code != 200:
            raise ProjectorUnavailable(f"a projector answered {response.status_code}")
        return self._page.decode(response.content)

    async def _projected(self, run_id: str, user_id: str) -> tuple[RunState | None, bool]:
        """The projected run (None if absent or not the caller's), and whether a projector answered."""
        try:
            response = await self.projectors.get(f"/internal/runs/{run_id}", {"user_id": user_id})
        except ProjectorUnavailable:
            return None, False
        if response.status_code != 200:
            return None, True
        try:
            state = self._state.decode(response.content)
        except msgspec.DecodeError:
            logger.warning("projector sent an undecodable run %s", run_id)
            return None, False
        return (state if state.user_id in ("", user_id) else None), True

    def _younger_than_streams(self, run_id: str) -> bool:
        """Whether the run stream of ``run_id`` cannot have expired yet (ids start with creation ms).

        A stream lives until ``run_ttl_s`` after the run's end, so a missing stream of a younger
        id means the run never existed: a true 404 even with every projector down.
        """
        if not is_run_id(run_id):
            return True
        created_ms = int(run_id[:12], 16)
        return time.time() * 1000 - created_ms < self.store.run_ttl_s * 1000

    async def _last_id(self, run_id: str) -> str:
        raw = await self.store.redis.xrevrange(self.store.keys.run(run_id), count=1)
        if not raw:
            return ""
        entry_id = raw[0][0]
        return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
