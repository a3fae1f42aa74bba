"""Rebuild equals incremental; a fresh projector after a trimmed log starts from a snapshot."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import msgspec
from redis.asyncio import Redis

from services.projector import snapshots
from services.projector.rebuild import rebuild
from services.projector.service import ProjectorService
from services.projector.settings import ProjectorSettings
from shared.keys import Keys
from shared.store import EventStore
from tests.projector.conftest import projector_env
from tests.projector.support import checksum, db_states, folded, until_caught_up, write_runs
from tests.support.processes import ROOT

MakeSettings = Callable[..., ProjectorSettings]
ENDINGS = ["completed", "failed", "cancelled", "running", "queued", "cancel-queued"]


async def _project(settings: ProjectorSettings, redis: Redis, keys: Keys) -> ProjectorService:
    service = ProjectorService(settings)
    await service.start()
    await until_caught_up(service, redis, keys.events)
    return service


async def test_rebuild_from_the_log_equals_incremental(
    redis: Redis, keys: Keys, make_settings: MakeSettings
) -> None:
    store = EventStore(redis, keys)
    run_ids = await write_runs(store, ENDINGS)
    settings = make_settings(TT_PROJECTOR_BATCH_SIZE="7")
    await (await _project(settings, redis, keys)).stop()
    incremental = checksum(settings.db_path)

    report = await rebuild(make_settings(TT_PROJECTOR_BATCH_SIZE="1000"), from_log=True)
    assert (report.source, report.start) == ("log", "0-0")
    assert checksum(settings.db_path) == incremental
    assert db_states(settings.db_path) == await folded(store, run_ids)


async def test_rebuild_from_a_snapshot_plus_the_log_equals_incremental(
    redis: Redis, keys: Keys, make_settings: MakeSettings
) -> None:
    store = EventStore(redis, keys)
    settings = make_settings(TT_SNAPSHOT_INTERVAL_S="3600")
    await write_runs(store, ENDINGS[:3])
    service = await _project(settings, redis, keys)
    snap = await service.snapshot()
    await write_runs(store, ENDINGS[3:])
    await until_caught_up(service, redis, keys.events)
    await service.stop()
    incremental = checksum(settings.db_path)

    done = subprocess.run(
        [sys.executable, "-m", "services.projector", "rebuild"],
        env=projector_env(settings.common.redis_url, settings.common.state_dir),
        cwd=ROOT, capture_output=True, timeout=60, check=True,
    )  # fmt: skip
    report = msgspec.json.decode(done.stdout)
    assert (report["source"], report["start"]) == (snap.path.name, snap.checkpoint)
    assert checksum(settings.db_path) == incremental


async def test_rebuild_refuses_while_a_projector_holds_the_database(
    redis: Redis, keys: Keys, make_settings: MakeSettings
) -> None:
    settings = make_settings()
    service = await _project(settings, redis, keys)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "services.projector", "rebuild"],
            env=projector_env(settings.common.redis_url, settings.common.state_dir),
            cwd=ROOT, capture_output=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 1
        assert b"stop the running projector first" in done.stderr
    finally:
        await service.stop()


async def test_after_the_log_was_trimmed_a_fresh_projector_starts_from_the_snapshot(
    redis: Redis, keys: Keys, make_settings: MakeSettings
) -> None:
    store = EventStore(redis, keys)
    settings = make_settings(TT_SNAPSHOT_INTERVAL_S="3600", TT_LOG_RETENTION_S="0")
    early = await write_runs(store, ENDINGS)
    service = await _project(settings, redis, keys)
    await service.snapshot()
    whole_log = await redis.xlen(keys.events)
    assert (await service.retention().run_once())["log_trimmed"] == whole_log
    late = await write_runs(store, ENDINGS[:3])
    await until_caught_up(service, redis, keys.events)
    await service.stop()
    incremental = checksum(settings.db_path)

    _remove_database(settings.db_path)  # a new pod with an empty volume but the snapshots
    fresh = await _project(settings, redis, keys)
    await fresh.stop()
    assert checksum(settings.db_path) == incremental
    assert set(db_states(settings.db_path)) == set(early + late)
    assert snapshots.latest(settings.snapshot_dir) is not None


def _remove_database(db_path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db_path}{suffix}").unlink(missing_ok=True)
