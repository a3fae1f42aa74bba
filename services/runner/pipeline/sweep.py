"""The outcome sweep: each completed call measured on its own data once its horizon has passed.

``memory.remember`` schedules every completed call (``Keys.outcomes_due`` / ``outcomes_pending``).
Each runner runs ``OutcomeSweep.run_once`` every ``TT_OUTCOME_SWEEP_S``: it claims the calls due
(re-scored to a lease's end in the same step, so two runners never measure one call at once),
fetches the run's own provider's data as of today, scores the call as the desk's memory does
(``memory.score``) and appends ``OutcomeMeasured`` to the global log in the very step that takes
the call off the schedule (``OUTCOMES_SETTLE``): one event per call whatever the runners do. The
projector folds it into the run's row; the history shows it.

When the provider's data does not reach the horizon's end yet (a weekend, a CSV folder not yet
updated, a provider failing), the call is tried again later, backing off; at the last try the
latest measurement is recorded as the return so far (with none, the call is dropped).
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import date, datetime

import msgspec
from redis.asyncio import Redis

from services.runner.pipeline import memory
from services.runner.pipeline.base import PipelineError
from services.runner.pipeline.data import MarketDataService
from services.runner.pipeline.memory import Pending
from services.runner.pipeline.settings import PipelineSettings
from shared.clock import Now, millis, now_of
from shared.events import EventCodec, OutcomeMeasured
from shared.keys import Keys
from shared.outcomes import outcome_of
from shared.results import MarketData, PastCall
from shared.scripts import OUTCOMES_CLAIM, OUTCOMES_SETTLE

logger = logging.getLogger(__name__)

LEASE_MS = 10 * 60 * 1000
"""How long a claimed call is this sweeper's: longer than one sweep's fetches take."""
BATCH = 100
"""Calls claimed per sweep (the rest wait for the next one)."""
MAX_TRIES = 8
"""Measurements that found no close at the horizon's end before the return so far is recorded."""
RETRY_BASE_MS = 6 * 3600 * 1000
RETRY_CAP_MS = 7 * 24 * 3600 * 1000
"""Retries back off from six hours, doubling, to a week (eight tries span about a month)."""

Fetched = dict[tuple[str, str], MarketData | None]
"""The data one sweep fetched, by (provider, symbol): calls on one symbol share one fetch."""


def backoff_ms(tries: int) -> int:
    """How long after its ``tries``-th measurement a call is measured again."""
    return int(min(RETRY_BASE_MS * 2 ** max(tries - 1, 0), RETRY_CAP_MS))


def from_env(redis: Redis, keys: Keys) -> OutcomeSweep:
    """A sweep on the pipeline's data settings (``TT_DATA_PROVIDER``, ``TT_CSV_DIR``…) and the
    runner's keys."""
    return OutcomeSweep(redis, dataclasses.replace(PipelineSettings.from_env(), keys=keys))


class OutcomeSweep:
    """Measures due calls and appends their outcomes; ``now`` is Redis's clock unless injected."""

    def __init__(
        self,
        redis: Redis,
        settings: PipelineSettings,
        *,
        data: MarketDataService | None = None,
        now: Now | None = None,
    ) -> None:
        self.redis, self.keys = redis, settings.keys
        self.data = data or MarketDataService(settings, redis)
        self._now = now
        self._claim = redis.register_script(OUTCOMES_CLAIM)
        self._settle = redis.register_script(OUTCOMES_SETTLE)
        self._codec = EventCodec()
        self._pending = msgspec.json.Decoder(Pending)
        self._calls = msgspec.json.Decoder(PastCall)
        self._backfill_checked = False

    async def backfill(self) -> int:
        """Schedule the calls recorded before outcomes were swept (the desk's memory hashes), once
        per Redis (a marker key); a call already scheduled stays as it is. How many were new."""
        if not await self.redis.set(self.keys.outcomes_backfilled, "1", nx=True):
            return 0
        scheduled = 0
        async for key in self.redis.scan_iter(match=self.keys.memory("*", "*", "*"), count=500):
            scheduled += await self._schedule_memory(key.decode() if isinstance(key, bytes) else str(key))
        logger.info("earlier calls scheduled for their outcomes", extra={"scheduled": scheduled})
        return scheduled

    async def _schedule_memory(self, key: str) -> int:
        user, provider, symbol = self.keys.memory_owner(key)
        async with self.redis.pipeline(transaction=False) as pipe:
            for raw in (await self.redis.hgetall(key)).values():
                try:
                    call = self._calls.decode(raw)
                except (msgspec.ValidationError, msgspec.DecodeError):
                    continue
                pending = Pending(user_id=user, provider=provider, symbol=symbol, call=call)
                memory.schedule(pipe, self.keys, pending, only_new=True)
            replies = await pipe.execute()
        return sum(1 for added in replies[1::2] if added)  # (HSETNX, ZADD NX) per call

    async def run_once(self) -> int:
        """Measure the calls due now; how many outcomes were recorded."""
        if not self._backfill_checked:
            await self.backfill()
            self._backfill_checked = True
        now = await now_of(self.redis, self._now)
        lease = millis(now) + LEASE_MS
        claimed = await self._claim(keys=[self.keys.outcomes_due], args=[millis(now), lease, BATCH])
        fetched: Fetched = {}
        recorded = 0
        for raw in claimed:
            run_id = raw.decode() if isinstance(raw, bytes) else str(raw)
            recorded += await self._measure(run_id, lease, now, fetched)
        return recorded

    async def _measure(self, run_id: str, lease: int, now: datetime, fetched: Fetched) -> int:
        """Record the call's outcome, or schedule its next try; 1 if an outcome was recorded."""
        pending = self._decode(await self.redis.hget(self.keys.outcomes_pending, run_id))
        if pending is None:
            return await self._settled(run_id, lease, "drop")
        data = await self._market(pending, now.date(), fetched)
        call = pending.call if data is None else memory.score(pending.call, data)
        if not call.horizon_ended and pending.tries + 1 < MAX_TRIES:
            again = msgspec.structs.replace(pending, tries=pending.tries + 1)
            due = millis(now) + backoff_ms(again.tries)
            logger.info("outcome not measurable yet", extra={"run_id": run_id, "tries": again.tries})
            await self._settled(run_id, lease, "retry", due, msgspec.json.encode(again))
            return 0
        outcome = outcome_of(call, now)
        if outcome is None:
            logger.warning("outcome never measurable: dropped", extra={"run_id": run_id})
            return await self._settled(run_id, lease, "drop")
        event = OutcomeMeasured(run_id=run_id, user_id=pending.user_id, outcome=outcome, at=now)
        return await self._settled(run_id, lease, "record", self._codec.encode(event))

    async def _settled(self, run_id: str, lease: int, action: str, *more: bytes | int) -> int:
        """Apply ``action`` if the claim is still ours; 1 for a recorded outcome."""
        keys = [self.keys.outcomes_due, self.keys.outcomes_pending, self.keys.events]
        done = await self._settle(keys=keys, args=[run_id, lease, action, *more])
        if not done:
            logger.warning("outcome claim lost to another sweeper", extra={"run_id": run_id})
        return int(bool(done) and action == "record")

    async def _market(self, pending: Pending, today: date, fetched: Fetched) -> MarketData | None:
        """The provider's newest data on the call's symbol; None if it has none now."""
        key = (pending.provider, pending.symbol)
        if key not in fetched:
            try:
                fetched[key] = await self.data.fresh(pending.provider, pending.symbol, today)
            except PipelineError as exc:
                logger.warning("no data to measure outcomes on", extra={"symbol": key, "error": str(exc)})
                fetched[key] = None
            except Exception:  # whatever else a provider raises: the call is tried again later
                logger.exception("provider failed measuring outcomes", extra={"symbol": key})
                fetched[key] = None
        return fetched[key]

    def _decode(self, raw: bytes | str | None) -> Pending | None:
        if raw is None:
            return None
        try:
            return self._pending.decode(raw)
        except (msgspec.ValidationError, msgspec.DecodeError):
            return None
