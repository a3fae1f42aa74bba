"""The desk's memory: each finished call on a symbol, and what the price did after it.

A completed run records its call in a Redis hash per (user, provider, symbol), keyed by run id, so a
retried or resumed run records it once. The next run on the symbol recalls the last few calls
made before it and scores each against its own data (the same provider): the close at the
horizon's end (or the latest close before it) over the close at the decision. Demo data gives
demo outcomes, labelled as such. The hash is a cache of decisions, not the record of them: the
runs' event streams stay the truth, and losing the hash only loses the context.

The same write registers the call as awaiting its outcome (``Pending``, due the day after its
horizon ends): the runners' outcome sweep (``sweep``) measures it then, so a run that no later run
followed still gets its outcome.
"""

from __future__ import annotations

import bisect
import logging
from datetime import UTC, date, datetime, time, timedelta

import msgspec
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError

from shared.events import RunRequested
from shared.keys import Keys
from shared.results import Assessment, MarketData, PastCall

logger = logging.getLogger(__name__)

RECALL = 3
"""Past calls shown to the portfolio manager (TradingAgents' reflection looks at a few)."""
HOLD_BAND = 0.05
"""A HOLD was right when the price moved less than this either way."""
_decoder = msgspec.json.Decoder(PastCall)


class Pending(msgspec.Struct, frozen=True, kw_only=True):
    """A completed call awaiting its outcome: whose, measured on which data, tried how often."""

    user_id: str
    provider: str
    symbol: str
    call: PastCall
    tries: int = 0


def horizon_due_ms(call: PastCall) -> int:
    """When the call's outcome is first measured: the start (UTC) of the day after its horizon
    ends, when that day's close exists."""
    ends = date.fromisoformat(call.date) + timedelta(days=call.horizon_days + 1)
    return int(datetime.combine(ends, time(0), UTC).timestamp() * 1000)


def score(call: PastCall, data: MarketData) -> PastCall:
    """``call`` with its outcome measured on ``data`` (unchanged when no close follows it)."""
    dates = data.prices.dates
    ends = (date.fromisoformat(call.date) + timedelta(days=call.horizon_days)).isoformat()
    last = bisect.bisect_right(dates, ends) - 1
    if last < 0 or dates[last] <= call.date:
        return call
    realised = data.prices.close[last] / call.price - 1
    hit = (
        realised > 0
        if call.decision == "BUY"
        else realised < 0
        if call.decision == "SELL"
        else abs(realised) < HOLD_BAND
    )
    return msgspec.structs.replace(
        call,
        realised_return=round(realised, 4),
        horizon_ended=dates[-1] >= ends,
        hit=hit,
        demo=data.demo,
    )


def schedule(pipe: Pipeline, keys: Keys, pending: Pending, *, only_new: bool = False) -> None:
    """Queue on ``pipe`` the writes that schedule the measurement of ``pending``'s outcome
    (``only_new``: leave a call already scheduled as it is)."""
    run_id, encoded = pending.call.run_id, msgspec.json.encode(pending)
    if only_new:
        pipe.hsetnx(keys.outcomes_pending, run_id, encoded)
    else:
        pipe.hset(keys.outcomes_pending, run_id, encoded)
    pipe.zadd(keys.outcomes_due, {run_id: horizon_due_ms(pending.call)}, nx=only_new)


async def recall(redis: Redis, keys: Keys, data: MarketData, run: RunRequested) -> list[PastCall]:
    """The caller's last few calls on the symbol made before ``run``, scored; none if Redis cannot say."""
    run_id, at = run.run_id, run.at
    try:
        stored = await redis.hgetall(keys.memory(run.user_id, data.provider, data.symbol))
    except RedisError as exc:
        logger.warning("desk memory unavailable", extra={"symbol": data.symbol, "error": str(exc)})
        return []
    calls = []
    for raw in stored.values():
        try:
            call = _decoder.decode(raw)
        except (msgspec.ValidationError, msgspec.DecodeError):
            continue
        if call.run_id != run_id and call.date < at.date().isoformat():
            calls.append(call)
    calls.sort(key=lambda c: (c.date, c.run_id))
    return [score(c, data) for c in calls[-RECALL:]]


async def remember(redis: Redis, keys: Keys, data: MarketData, run: RunRequested, call: Assessment) -> None:
    """Record this run's call for its user's runs after it, and schedule its outcome's measurement
    (best effort: a lost entry loses context only). Idempotent: a retried run rewrites its entries."""
    past = PastCall(
        run_id=run.run_id,
        date=run.at.date().isoformat(),
        decision=call.decision,
        rating=call.rating,
        price=data.prices.close[-1],
        price_target=call.price_target,
        horizon_days=call.horizon_days or 91,
        demo=data.demo,
    )
    pending = Pending(user_id=run.user_id, provider=data.provider, symbol=data.symbol, call=past)
    key = keys.memory(run.user_id, data.provider, data.symbol)
    try:
        async with redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, run.run_id, msgspec.json.encode(past))
            schedule(pipe, keys, pending)
            await pipe.execute()
    except RedisError as exc:
        logger.warning("desk memory not recorded", extra={"symbol": data.symbol, "error": str(exc)})
