"""Outcomes of past calls reach the earlier run's row, from events only.

A run's result lists the earlier calls on its symbol with what the price did since (``memory``),
and the runners' outcome sweep appends ``OutcomeMeasured`` once a run's horizon has passed; the
projector records each on the measured run's row, current or archived, and a rebuild from the log
gives the very same rows.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from redis.asyncio import Redis

from services.projector.rebuild import rebuild
from services.projector.service import ProjectorService
from services.projector.settings import ProjectorSettings
from shared.events import AnyEvent, EventCodec, OutcomeMeasured, RunCompleted, ShareCreated, utcnow
from shared.ids import new_run_id
from shared.keys import Keys
from shared.results import Outcome, PastCall, RunResult
from shared.store import EventStore
from tests.projector.conftest import Clock
from tests.projector.support import checksum, db_states, plan, until_caught_up, write


def db_rows(db_path: Path) -> dict[str, dict[str, object]]:
    """Every column of every row of ``runs``, by run id."""
    with sqlite3.connect(db_path) as db:
        db.row_factory = sqlite3.Row
        return {row["run_id"]: dict(row) for row in db.execute("SELECT * FROM runs")}


MakeSettings = Callable[..., ProjectorSettings]


def measured(run_id: str, realised: float, *, ended: bool = False, demo: bool = True) -> PastCall:
    return PastCall(
        run_id=run_id, date="2026-10-01", decision="BUY", rating="Buy", price=100.0, horizon_days=30,
        realised_return=realised, horizon_ended=ended, hit=realised > 0, demo=demo,
    )  # fmt: skip


def result(*memory: PastCall) -> RunResult:
    return RunResult(
        symbol="AAPL", decision="HOLD", rating="Hold", confidence=0.5, horizon="1 month",
        rationale="r", key_risks=[], reports=[], memory=list(memory),
    )  # fmt: skip


async def write_run(
    store: EventStore, *memory: PastCall, ending: str = "completed", user: str = "alice"
) -> str:
    """A run of ``user`` on AAPL; completed with a result whose memory is ``memory``."""
    run_id = new_run_id()
    events: list[AnyEvent] = plan(run_id, ending, user=user)
    if ending == "completed":
        events[-1] = RunCompleted(run_id=run_id, duration_s=1.0, result=result(*memory))
    for event in events:
        await write(store, event)
    return run_id


async def test_a_later_run_records_the_outcome_and_a_rebuild_gives_the_same_rows(
    redis: Redis, keys: Keys, make_settings: MakeSettings
) -> None:
    store = EventStore(redis, keys)
    past, failed = await write_run(store), await write_run(store, ending="failed")
    settings = make_settings(TT_PROJECTOR_BATCH_SIZE="3")  # observations cross batch boundaries
    service = ProjectorService(settings)
    await service.start()
    try:
        await write_run(store, measured(past, 0.02), measured(failed, 0.1), measured(new_run_id(), 0.3))
        await until_caught_up(service, redis, keys.events)
        first = db_states(settings.db_path)[past].outcome
        assert first is not None and (first.realised_return, first.correct) == (0.02, True)
        assert first.horizon_days == 30 and first.demo and not first.horizon_ended
        assert db_states(settings.db_path)[failed].outcome is None  # a failed run made no call

        share = ShareCreated(run_id=past, share_id="s1", user_id="alice", token_sha256="0" * 64)
        await store.append(share)  # the run's own later events keep what was measured
        later = await write_run(store, measured(past, -0.04, ended=True))
        await write_run(store, measured(past, 0.5))  # measured before the horizon ended: not kept
        await until_caught_up(service, redis, keys.events)
        states = db_states(settings.db_path)
        outcome = states[past].outcome
        assert outcome is not None and (outcome.realised_return, outcome.correct) == (-0.04, False)
        assert outcome.horizon_ended and outcome.observed_at == states[later].completed_at
        assert [s.share_id for s in states[past].shares] == ["s1"]
        assert states[later].outcome is None
    finally:
        await service.stop()
    incremental = checksum(settings.db_path)

    await rebuild(make_settings(TT_PROJECTOR_BATCH_SIZE="1000"), from_log=True)

    assert checksum(settings.db_path) == incremental


async def test_an_outcome_reaches_a_run_already_archived(
    redis: Redis, keys: Keys, make_settings: MakeSettings, clock: Clock
) -> None:
    store = EventStore(redis, keys)
    service = ProjectorService(make_settings(TT_HISTORY_DAYS="1"), now=clock)
    await service.start()
    try:
        past = await write_run(store)
        await until_caught_up(service, redis, keys.events)
        clock.at += timedelta(days=2)
        assert (await service.retention().run_once())["archived"] == 1

        await write_run(store, measured(past, 0.07, demo=False))
        await until_caught_up(service, redis, keys.events)

        archived = db_states(service.settings.db_path, "runs_archive")[past]
        assert archived.outcome is not None and archived.outcome.realised_return == 0.07
        assert not archived.outcome.demo and past not in db_states(service.settings.db_path)
    finally:
        await service.stop()


async def test_a_run_of_another_user_never_records_an_outcome(
    redis: Redis, keys: Keys, make_settings: MakeSettings
) -> None:
    store = EventStore(redis, keys)
    settings = make_settings()
    service = ProjectorService(settings)
    await service.start()
    try:
        alices = await write_run(store)
        await write_run(store, measured(alices, -0.3), user="mallory")  # e.g. a custom pipeline's result
        await until_caught_up(service, redis, keys.events)
        assert db_states(settings.db_path)[alices].outcome is None
        await write_run(store, measured(alices, 0.02))
        await until_caught_up(service, redis, keys.events)
        outcome = db_states(settings.db_path)[alices].outcome
        assert outcome is not None and outcome.realised_return == 0.02
    finally:
        await service.stop()


def swept_outcome(realised: float, *, ended: bool = True, demo: bool = False) -> Outcome:
    return Outcome(
        realised_return=realised, correct=realised > 0, horizon_days=91, demo=demo, horizon_ended=ended,
        observed_at=utcnow(),
    )  # fmt: skip


async def sweep(redis: Redis, keys: Keys, run_id: str, outcome: Outcome, user: str = "alice") -> None:
    """Append an ``OutcomeMeasured`` as the runners' outcome sweep does: to the global log only."""
    event = OutcomeMeasured(run_id=run_id, user_id=user, outcome=outcome)
    await redis.xadd(keys.events, {"e": EventCodec().encode(event), "r": run_id})


async def test_the_sweeps_outcomes_follow_the_rules_and_a_rebuild_gives_the_same_rows(
    redis: Redis, keys: Keys, make_settings: MakeSettings
) -> None:
    store = EventStore(redis, keys)
    settings = make_settings(TT_PROJECTOR_BATCH_SIZE="2")  # observations cross batch boundaries
    service = ProjectorService(settings)
    await service.start()
    try:
        first, second = await write_run(store), await write_run(store)
        await until_caught_up(service, redis, keys.events)
        before = db_rows(settings.db_path)[first]
        await sweep(redis, keys, first, swept_outcome(0.01, ended=False))
        await sweep(redis, keys, first, swept_outcome(-0.03))
        await sweep(redis, keys, first, swept_outcome(0.09, ended=False))  # not after an ended one
        await sweep(redis, keys, second, swept_outcome(0.2), user="mallory")
        await write_run(store, measured(second, 0.04, ended=True))  # a later run measures it too
        await until_caught_up(service, redis, keys.events)
        states = db_states(settings.db_path)
        assert states[first].outcome is not None and states[first].outcome.realised_return == -0.03
        assert states[second].outcome is not None and states[second].outcome.realised_return == 0.04
        after = db_rows(settings.db_path)[first]
        assert {k: v for k, v in after.items() if k != "state"} == {
            k: v for k, v in before.items() if k != "state"
        }  # the row's columns (its age among them) stay: only its state records the outcome
    finally:
        await service.stop()
    incremental = checksum(settings.db_path)

    await rebuild(make_settings(TT_PROJECTOR_BATCH_SIZE="1000"), from_log=True)

    assert checksum(settings.db_path) == incremental


async def test_the_sweeps_outcome_reaches_a_run_already_archived(
    redis: Redis, keys: Keys, make_settings: MakeSettings, clock: Clock
) -> None:
    store = EventStore(redis, keys)
    service = ProjectorService(make_settings(TT_HISTORY_DAYS="1"), now=clock)
    await service.start()
    try:
        past = await write_run(store)
        await until_caught_up(service, redis, keys.events)
        clock.at += timedelta(days=2)
        assert (await service.retention().run_once())["archived"] == 1

        await sweep(redis, keys, past, swept_outcome(0.07, demo=True))
        await until_caught_up(service, redis, keys.events)

        archived = db_states(service.settings.db_path, "runs_archive")[past]
        assert archived.outcome is not None and archived.outcome.realised_return == 0.07
        assert archived.outcome.demo and past not in db_states(service.settings.db_path)
    finally:
        await service.stop()
