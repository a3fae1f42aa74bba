"""Projector fixtures: settings on a test Redis and a temporary state folder."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from services.projector.service import ProjectorService
from services.projector.settings import ProjectorSettings
from shared.config import Env
from shared.events import utcnow
from tests.support.processes import ServiceProcess


def projector_env(redis_url: str, state_dir: Path, **extra: str) -> dict[str, str]:
    return {
        "REDIS_URL": redis_url,
        "TT_STATE_DIR": str(state_dir),
        "TT_PROJECTOR_BATCH_WAIT_MS": "100",
        "TT_SNAPSHOT_INTERVAL_S": "0",
        "TT_RETENTION_INTERVAL_S": "0",
        "TT_LOG_LEVEL": "INFO",
        **extra,
    }


@pytest.fixture
def make_settings(redis_url: str, state_dir: Path) -> object:
    def build(**extra: str) -> ProjectorSettings:
        return ProjectorSettings.from_env(Env(projector_env(redis_url, state_dir, **extra)))

    return build


@pytest.fixture
def make_process(redis_url: str, state_dir: Path) -> Iterator[object]:
    started: list[ServiceProcess] = []

    def build(**extra: str) -> ServiceProcess:
        process = ServiceProcess("projector", projector_env(redis_url, state_dir, **extra), log_dir=state_dir)
        started.append(process)
        return process

    yield build
    for process in started:
        process.stop()


class Clock:
    """A hand-set clock for an in-process projector (``ProjectorService(now=clock)``)."""

    def __init__(self, at: datetime | None = None) -> None:
        self.at = at or utcnow()

    def __call__(self) -> datetime:
        return self.at


@pytest.fixture
def clock() -> Clock:
    return Clock()


GRACE = timedelta(seconds=60)
"""The reconciliation grace period of the ``service`` fixture below."""


@pytest.fixture
async def service(
    make_settings: Callable[..., ProjectorSettings], clock: Clock
) -> AsyncIterator[ProjectorService]:
    """An in-process projector on the hand-set clock, reconciling only when a test asks."""
    settings = make_settings(TT_RECONCILE_INTERVAL_S="0", TT_RECONCILE_GRACE_S=str(GRACE.total_seconds()))
    svc = ProjectorService(settings, now=clock)
    await svc.start()
    try:
        yield svc
    finally:
        await svc.stop()
