"""The runner's periodic outcome sweep (``services.runner.pipeline.sweep``), as the worker runs it.

Built on the first tick that finds a call scheduled (or the earlier calls not yet backfilled), so
a runner whose pipeline never records calls imports no analysis code for it, and the import
happens on a worker thread, off the loop.
"""

from __future__ import annotations

import asyncio
import importlib
from typing import TYPE_CHECKING

from redis.asyncio import Redis

from shared.keys import Keys

if TYPE_CHECKING:
    from services.runner.pipeline.sweep import OutcomeSweep

SWEEP_MODULE = "services.runner.pipeline.sweep"


class OutcomeSweeper:
    """``tick`` is the job of the worker's ``every(TT_OUTCOME_SWEEP_S, …)`` loop."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis, self.keys = redis, keys
        self._sweep: OutcomeSweep | None = None
        """Built on the first tick with a call scheduled."""

    async def tick(self) -> int:
        """One sweep; how many outcomes it recorded."""
        if self._sweep is None:
            waiting = await self.redis.zcard(self.keys.outcomes_due)
            if not waiting and await self.redis.exists(self.keys.outcomes_backfilled):
                return 0
            module = await asyncio.to_thread(importlib.import_module, SWEEP_MODULE)
            self._sweep = module.from_env(self.redis, self.keys)
        return await self._sweep.run_once()
