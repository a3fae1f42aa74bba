"""Retention on Redis's clock, in a real projector process whose own wall clock is a month ahead."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis

from services.projector.settings import ProjectorSettings
from shared.keys import Keys
from shared.store import EventStore
from tests.projector.support import db_states, log_head, wait_caught_up, write_runs
from tests.support.processes import ROOT, ServiceProcess

MONTH_S = 31 * 86400
SKEWED = {
    "TT_TEST_CLOCK_SKEW_S": str(MONTH_S),
    "PYTHONPATH": f"{ROOT / 'tests' / 'chaos' / 'skewed_clock'}:{ROOT}",
    "TT_RETENTION_INTERVAL_S": "0.2",
}


def _passes(process: ServiceProcess) -> int:
    return process.logs().count("retention pass")


async def _more_passes(process: ServiceProcess, n: int, timeout_s: float = 20.0) -> None:
    """Wait until the process logged ``n`` more retention passes than now."""
    target, deadline = _passes(process) + n, time.monotonic() + timeout_s
    while _passes(process) < target:
        assert time.monotonic() < deadline, process.logs()[-2000:]
        await asyncio.sleep(0.1)


async def test_a_projector_a_month_ahead_archives_no_fresh_run(
    redis: Redis,
    keys: Keys,
    make_process: Callable[..., ServiceProcess],
    make_settings: Callable[..., ProjectorSettings],
) -> None:
    """Kills: retention's "now" read from the projector's own clock (``redis_now`` or ``now_of``
    in services/projector/clock.py returning ``utcnow()``): the run just ended would be archived
    as 31 days old and its stream expired."""
    process: Any = make_process(**SKEWED).start()
    store = EventStore(redis, keys)
    run_ids = await write_runs(store, ["completed", "failed"])
    await asyncio.to_thread(wait_caught_up, process.url, await log_head(redis, keys.events))
    await _more_passes(process, 2)

    db_path = make_settings().db_path
    assert set(db_states(db_path)) == set(run_ids)
    assert db_states(db_path, "runs_archive") == {}
    assert [await redis.exists(keys.run(r)) for r in run_ids] == [1, 1]
