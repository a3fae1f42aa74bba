"""Redis's clock: the one time basis on which ages, leases of slow work and due times compare.

Every age the projector decides by is measured against stream IDs (the global log's, the
queues'), which Redis stamps with its own clock; the runners, gateways and projectors each have
their own, and any of them may be hours or days off. So "now" is Redis's ``TIME`` too (also for
the runners' outcome sweep and the webhook schedule), unless a test injects a clock.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from redis.asyncio import Redis

Now = Callable[[], datetime]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)


async def redis_now(redis: Redis) -> datetime:
    """The Redis server's current time (``TIME``), as an aware UTC datetime."""
    seconds, micros = await redis.time()
    return datetime.fromtimestamp(int(seconds), UTC) + timedelta(microseconds=int(micros))


async def now_of(redis: Redis, injected: Now | None) -> datetime:
    """The injected clock's time if there is one, else Redis's."""
    return injected() if injected is not None else await redis_now(redis)


def millis(at: datetime) -> int:
    """Epoch milliseconds of ``at``, exact, comparable with a stream ID's time part."""
    aware = at if at.tzinfo is not None else at.replace(tzinfo=UTC)
    return (aware - _EPOCH) // _ONE_MS
