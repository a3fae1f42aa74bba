"""The outcome sweep: a completed run that no later run followed gets its outcome in history.

Real Redis, real SQLite (an in-process projector), the real pipeline on a CSV folder whose rows
go on past the run's horizon: the run is dated in the CSV's past, so its horizon (91 days) has
passed on any clock.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import httpx
import msgspec
import pytest
from redis.asyncio import Redis

from services.projector.rebuild import rebuild
from services.projector.service import ProjectorService
from services.projector.settings import ProjectorSettings
from services.runner.pipeline import Pipeline, PipelineSettings, csvdata
from services.runner.pipeline.memory import Pending
from services.runner.pipeline.sweep import LEASE_MS, MAX_TRIES, OutcomeSweep, backoff_ms
from shared.config import Env
from shared.events import EventCodec, OutcomeMeasured, RunCompleted, RunRequested
from shared.ids import new_run_id
from shared.keys import Keys
from shared.redis_io import connect
from shared.results import Outcome
from shared.store import EventStore
from tests.projector.support import checksum, db_states, plan, until_caught_up, write
from tests.runner.pipeline.support import RecordingReporter
from tests.runner.support import running_worker
from tests.support.processes import ServiceProcess

pytestmark = pytest.mark.timeout(90)

DECIDED = datetime(2024, 10, 1, 15, 0, tzinfo=UTC)
HORIZON_END = date(2024, 12, 31)
"""DECIDED + 91 days: the offline desk's horizon."""


class Clock:
    """A hand-set clock for the sweep (mock only time)."""

    def __init__(self) -> None:
        self.at = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.at


@pytest.fixture
def market(tmp_path: Path, market_dir: Path) -> Path:
    folder = tmp_path / "market"
    shutil.copytree(market_dir, folder)
    return folder


@pytest.fixture
def projector_settings(redis_url: str, state_dir: Path) -> ProjectorSettings:
    env = {
        "REDIS_URL": redis_url, "TT_STATE_DIR": str(state_dir), "TT_PROJECTOR_BATCH_WAIT_MS": "50",
        "TT_SNAPSHOT_INTERVAL_S": "0", "TT_RETENTION_INTERVAL_S": "0", "TT_RECONCILE_INTERVAL_S": "0",
    }  # fmt: skip
    return ProjectorSettings.from_env(Env(env))


@asynccontextmanager
async def projector(settings: ProjectorSettings) -> AsyncIterator[ProjectorService]:
    service = ProjectorService(settings)
    await service.start()
    try:
        yield service
    finally:
        await service.stop()


async def complete_run(
    redis: Redis,
    http: httpx.AsyncClient,
    settings: PipelineSettings,
    *,
    user: str = "alice",
    at: datetime = DECIDED,
) -> tuple[str, float]:
    """A run of ``user`` on ACME decided ``at``, through the real pipeline, written to the log as
    completed; (its id, its decision's close)."""
    run_id = new_run_id()
    events = plan(run_id, "completed", user=user, symbol="ACME", at=at)
    request = events[0]
    assert isinstance(request, RunRequested)
    result = await Pipeline(settings, redis, http).run(request, {}, RecordingReporter())
    assert result is not None and result.horizon_days == 91 and result.last_close is not None
    events[-1] = RunCompleted(run_id=run_id, duration_s=1.0, result=result, at=at)
    store = EventStore(redis, settings.keys)
    for event in events:
        await write(store, event)
    return run_id, result.last_close


def close_at_horizon(folder: Path, price: float) -> float:
    """The realised return the CSV says: the last close up to the horizon's end over ``price``."""
    prices = csvdata.read_prices(folder / "ACME.csv", HORIZON_END, 400)
    return round(prices.close[-1] / price - 1, 4)


async def measured(redis: Redis, keys: Keys) -> list[OutcomeMeasured]:
    codec = EventCodec()
    found = [codec.decode(fields[b"e"]) for _, fields in await redis.xrange(keys.events)]
    return [e for e in found if isinstance(e, OutcomeMeasured)]


def truncate(folder: Path, last: str) -> str:
    """Keep ACME's rows up to ``last`` only; the file's full text, to write back."""
    path = folder / "ACME.csv"
    full = path.read_text()
    lines = full.splitlines(keepends=True)
    path.write_text("".join([lines[0], *(row for row in lines[1:] if row[:10] <= last)]))
    return full


async def test_a_run_no_later_run_followed_gets_its_outcome_and_a_rebuild_gives_the_same_rows(
    redis: Redis, keys: Keys, http: httpx.AsyncClient, market: Path, projector_settings: ProjectorSettings
) -> None:
    settings = PipelineSettings(data_provider="csv", csv_dir=market)
    run_id, price = await complete_run(redis, http, settings)
    async with projector(projector_settings) as service:
        await until_caught_up(service, redis, keys.events)
        assert db_states(projector_settings.db_path)[run_id].outcome is None

        assert await OutcomeSweep(redis, settings).run_once() == 1
        await until_caught_up(service, redis, keys.events)
        outcome = db_states(projector_settings.db_path)[run_id].outcome
        assert outcome is not None and outcome.horizon_ended and not outcome.demo
        assert outcome.realised_return == close_at_horizon(market, price)
        assert outcome.horizon_days == 91 and outcome.correct is not None
        assert await OutcomeSweep(redis, settings).run_once() == 0  # measured once, then unscheduled
    incremental = checksum(projector_settings.db_path)

    await rebuild(projector_settings, from_log=True)

    assert checksum(projector_settings.db_path) == incremental
    assert [e.run_id for e in await measured(redis, keys)] == [run_id]


async def test_two_sweepers_record_each_outcome_once(
    redis: Redis, redis_url: str, keys: Keys, http: httpx.AsyncClient, market: Path
) -> None:
    settings = PipelineSettings(data_provider="csv", csv_dir=market)
    runs = [(await complete_run(redis, http, settings))[0] for _ in range(3)]
    clients = [connect(redis_url), connect(redis_url)]
    try:
        sweeps = [OutcomeSweep(client, settings) for client in clients]
        recorded = await asyncio.gather(*(s.run_once() for s in sweeps))
    finally:
        for client in clients:
            await client.aclose()
    assert sum(recorded) == 3
    assert sorted(e.run_id for e in await measured(redis, keys)) == sorted(runs)


async def test_two_runner_processes_sweeping_append_one_event_per_run(
    redis: Redis, redis_url: str, keys: Keys, http: httpx.AsyncClient, market: Path, tmp_path: Path
) -> None:
    settings = PipelineSettings(data_provider="csv", csv_dir=market)
    runs = [(await complete_run(redis, http, settings))[0] for _ in range(6)]
    env = {"REDIS_URL": redis_url, "TT_OUTCOME_SWEEP_S": "0.05", "TT_DATA_PROVIDER": "csv"}
    env |= {"TT_CSV_DIR": str(market), "TT_SHUTDOWN_GRACE_S": "0.3"}
    runners = [ServiceProcess("runner", env, log_dir=tmp_path) for _ in range(2)]
    try:
        for runner in runners:
            runner.start(wait=False)
        for _ in range(300):
            if len(await measured(redis, keys)) >= len(runs):
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # both keep sweeping: nothing more may be appended
    finally:
        for runner in runners:
            runner.stop(timeout_s=10)
    assert sorted(e.run_id for e in await measured(redis, keys)) == sorted(runs)
    assert await redis.zcard(keys.outcomes_due) == 0


async def test_a_claim_whose_lease_ended_is_not_recorded_by_its_late_sweeper(
    redis: Redis, keys: Keys, http: httpx.AsyncClient, market: Path
) -> None:
    settings = PipelineSettings(data_provider="csv", csv_dir=market)
    run_id, _ = await complete_run(redis, http, settings)
    clock = Clock()
    late = OutcomeSweep(redis, settings, now=clock)
    lease = int(clock.at.timestamp() * 1000) + LEASE_MS
    claimed = await late._claim(keys=[keys.outcomes_due], args=[lease - LEASE_MS, lease, 10])
    assert claimed == [run_id.encode()]
    clock.at += timedelta(milliseconds=LEASE_MS + 1)  # the late sweeper died, say; another takes over
    assert await OutcomeSweep(redis, settings, now=clock).run_once() == 1
    assert await late._settled(run_id, lease, "record", b"{}") == 0
    assert [e.run_id for e in await measured(redis, keys)] == [run_id]


async def test_another_users_run_is_never_given_an_outcome(
    redis: Redis, keys: Keys, http: httpx.AsyncClient, market: Path, projector_settings: ProjectorSettings
) -> None:
    settings = PipelineSettings(data_provider="csv", csv_dir=market)
    alices, _ = await complete_run(redis, http, settings, user="alice")
    lie = Outcome(realised_return=-0.5, correct=False, horizon_days=91, demo=False)
    forged = OutcomeMeasured(run_id=alices, user_id="mallory", outcome=lie)
    await redis.xadd(keys.events, {"e": EventCodec().encode(forged), "r": alices})
    async with projector(projector_settings) as service:
        await until_caught_up(service, redis, keys.events)
        assert db_states(projector_settings.db_path)[alices].outcome is None
        bobs, _ = await complete_run(redis, http, settings, user="bob")
        assert await OutcomeSweep(redis, settings).run_once() == 2
        await until_caught_up(service, redis, keys.events)
        states = db_states(projector_settings.db_path)
    users = {e.run_id: e.user_id for e in await measured(redis, keys) if e.user_id != "mallory"}
    assert users == {alices: "alice", bobs: "bob"}
    assert states[alices].outcome is not None and states[alices].outcome.realised_return != -0.5


async def test_data_not_yet_at_the_horizon_is_measured_again_later(
    redis: Redis, keys: Keys, http: httpx.AsyncClient, market: Path
) -> None:
    settings = PipelineSettings(data_provider="csv", csv_dir=market)
    run_id, price = await complete_run(redis, http, settings)
    clock = Clock()
    sweep = OutcomeSweep(redis, settings, now=clock)
    full = truncate(market, "2024-12-20")  # the folder was not updated past the horizon's end yet
    assert await sweep.run_once() == 0
    pending = msgspec.json.decode(await redis.hget(keys.outcomes_pending, run_id), type=Pending)
    assert pending.tries == 1
    due = await redis.zscore(keys.outcomes_due, run_id)
    assert due == int(clock.at.timestamp() * 1000) + backoff_ms(1)
    assert await sweep.run_once() == 0 and await measured(redis, keys) == []  # not due yet

    (market / "ACME.csv").write_text(full)  # the folder is updated
    clock.at += timedelta(milliseconds=backoff_ms(1))
    assert await sweep.run_once() == 1
    (event,) = await measured(redis, keys)
    assert event.outcome.horizon_ended and event.outcome.realised_return == close_at_horizon(market, price)
    assert await redis.hget(keys.outcomes_pending, run_id) is None


async def test_data_that_never_reaches_the_horizon_is_recorded_as_so_far_after_the_last_try(
    redis: Redis, keys: Keys, http: httpx.AsyncClient, market: Path
) -> None:
    settings = PipelineSettings(data_provider="csv", csv_dir=market)
    run_id, _ = await complete_run(redis, http, settings)
    truncate(market, "2024-12-20")
    clock = Clock()
    sweep = OutcomeSweep(redis, settings, now=clock)
    for tries in range(1, MAX_TRIES):
        assert await sweep.run_once() == 0
        clock.at += timedelta(milliseconds=backoff_ms(tries))
    assert await sweep.run_once() == 1
    (event,) = await measured(redis, keys)
    assert event.run_id == run_id and not event.outcome.horizon_ended
    assert await redis.zscore(keys.outcomes_due, run_id) is None


async def test_a_runner_sweeps_on_its_interval_and_demo_outcomes_are_labelled_demo(
    redis: Redis, redis_url: str, keys: Keys, http: httpx.AsyncClient
) -> None:
    settings = PipelineSettings(keys=keys)  # synthetic (demo) data
    run_id, _ = await complete_run(redis, http, settings, at=datetime.now(UTC) - timedelta(days=120))
    async with running_worker(redis_url, TT_OUTCOME_SWEEP_S="0.2"):
        for _ in range(100):
            if await measured(redis, keys):
                break
            await asyncio.sleep(0.1)
    (event,) = await measured(redis, keys)
    assert event.run_id == run_id and event.outcome.demo and event.outcome.horizon_ended


async def test_a_provider_with_no_data_is_tried_again_and_the_call_dropped_after_the_last_try(
    redis: Redis, keys: Keys, http: httpx.AsyncClient, market: Path
) -> None:
    settings = PipelineSettings(data_provider="csv", csv_dir=market)
    run_id, _ = await complete_run(redis, http, settings)
    (market / "ACME.csv").unlink()  # the provider now fails on the symbol
    clock = Clock()
    sweep = OutcomeSweep(redis, settings, now=clock)
    for tries in range(1, MAX_TRIES):
        assert await sweep.run_once() == 0
        pending = msgspec.json.decode(await redis.hget(keys.outcomes_pending, run_id), type=Pending)
        assert pending.tries == tries
        clock.at += timedelta(milliseconds=backoff_ms(tries))
    assert await sweep.run_once() == 0
    assert await measured(redis, keys) == [] and await redis.zcard(keys.outcomes_due) == 0
    assert await redis.hget(keys.outcomes_pending, run_id) is None


async def test_calls_recorded_before_the_sweep_existed_are_backfilled_once(
    redis: Redis, redis_url: str, keys: Keys, http: httpx.AsyncClient, market: Path
) -> None:
    settings = PipelineSettings(data_provider="csv", csv_dir=market)
    run_id, price = await complete_run(redis, http, settings, user="a:b")  # a ':' in a user id too
    await redis.delete(keys.outcomes_due, keys.outcomes_pending)  # what a runner before it left
    assert await redis.hlen(keys.memory("a:b", "csv", "ACME")) == 1

    assert await OutcomeSweep(redis, settings).run_once() == 1
    (event,) = await measured(redis, keys)
    assert (event.run_id, event.user_id) == (run_id, "a:b")
    assert event.outcome.realised_return == close_at_horizon(market, price)
    assert await OutcomeSweep(redis, settings).backfill() == 0  # once per Redis
    assert await OutcomeSweep(redis, settings).run_once() == 0 and len(await measured(redis, keys)) == 1
