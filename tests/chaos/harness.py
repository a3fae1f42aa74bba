"""A cluster of real service processes over one real Redis, and the checks every fault ends with.

Each cluster has its own key prefix and state folder (like ``tests.e2e.stack.Stack``), so
clusters share the session's Redis without flushing it under each other. Measurements go to
``test-output/reliability.json`` (merged per key), so they survive without ``pytest -s``.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import httpx
from redis.asyncio import Redis

from shared.events import AnyEvent, RunStarted, StepCompleted, is_terminal
from shared.keys import RUNNERS_GROUP, Keys
from shared.redis_io import connect
from shared.reducer import apply, fold
from shared.run_state import RunState, initial
from shared.store import EventStore
from tests.projector.support import checksum, db_states, wait_caught_up
from tests.support.processes import ROOT, ServiceProcess

FIGURES = ROOT / "test-output" / "reliability.json"
FAST_RUNNER = {
    "TT_LEASE_S": "2",
    "TT_CLAIM_INTERVAL_S": "0.2",
    "TT_SHUTDOWN_GRACE_S": "0.5",
    "TT_RETRY_BACKOFF_S": "0.1",
    "TT_READ_BLOCK_S": "0.5",
    "TT_QUEUE_STATS_INTERVAL_S": "1",
}


def record(name: str, figures: Mapping[str, Any]) -> None:
    """Merge one test's measurements into test-output/reliability.json (and print them)."""
    FIGURES.parent.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {}
    if FIGURES.exists():
        try:
            doc = json.loads(FIGURES.read_text())
        except ValueError:
            doc = {}
    doc[name] = {**figures, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "cpus": os.cpu_count()}
    FIGURES.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    print(f"\n[reliability] {name}: {json.dumps(figures, sort_keys=True)}")  # noqa: T201


class Cluster:
    """Projector, runners and gateways as real processes; add, kill and stop them one by one."""

    def __init__(self, redis_url: str, state_dir: Path, *, step_delay_s: float = 0.05, **extra: str) -> None:
        self.redis_url = redis_url
        self.prefix = f"tt{uuid.uuid4().hex[:8]}:"
        self.keys = Keys(self.prefix)
        self.state_dir = state_dir
        self.log_dir = state_dir / "logs"
        self.env: dict[str, str] = {
            "REDIS_URL": redis_url,
            "TT_PREFIX": self.prefix,
            "TT_STATE_DIR": str(state_dir),
            "TT_STEP_DELAY_S": str(step_delay_s),
            "TT_LOG_FORMAT": "text",
            "TT_PROJECTOR_BATCH_WAIT_MS": "100",
            "TT_SNAPSHOT_INTERVAL_S": "0",
            "TT_RETENTION_INTERVAL_S": "0",
            "TT_MAX_ACTIVE_RUNS": "0",
            "TT_SUBMIT_RATE": "0/min",
            "TT_SSE_HEARTBEAT_S": "1",
            **FAST_RUNNER,
            **extra,
        }
        self.projector = ServiceProcess("projector", self.env, log_dir=self.log_dir)
        self.env["TT_PROJECTOR_URL"] = self.projector.url
        self.runners: dict[str, ServiceProcess] = {}
        self.gateways: list[ServiceProcess] = []
        self.redis: Redis = connect(redis_url)
        self.store = EventStore(self.redis, self.keys)

    @property
    def db_path(self) -> Path:
        return self.state_dir / "projector" / "tickertape.db"

    def runner(self, name: str, **env: str) -> ServiceProcess:
        process = ServiceProcess(
            "runner", {**self.env, "TT_RUNNER_ID": name, **env}, port=None, log_dir=self.log_dir
        )
        self.runners[name] = process
        return process

    def gateway(self, **env: str) -> ServiceProcess:
        process = ServiceProcess("gateway", {**self.env, **env}, log_dir=self.log_dir)
        self.gateways.append(process)
        return process

    async def start(self, *services: ServiceProcess) -> None:
        """Start processes in parallel and wait until each answers /healthz."""
        for service in services:
            await asyncio.to_thread(service.start, 30.0, False)
        for service in services:
            await asyncio.to_thread(service.wait_healthy, 60.0)

    async def stop(self) -> None:
        for service in [*self.gateways, *self.runners.values(), self.projector]:
            await asyncio.to_thread(service.stop, 15.0)
        await self.redis.aclose()

    def logs(self) -> str:
        services = [self.projector, *self.runners.values(), *self.gateways]
        return "\n".join(f"--- {s.name} {s.port}\n{s.logs()[-3000:]}" for s in services)

    # -- what every fault test checks at the end ----------------------------------------------

    async def events(self, run_id: str) -> list[tuple[str, AnyEvent]]:
        return await self.store.read(run_id)

    async def wait_terminal(self, run_ids: Iterable[str], timeout_s: float = 90.0) -> dict[str, RunState]:
        """Poll the folds of the run streams until every run has ended."""
        pending, states = set(run_ids), {}
        deadline = time.monotonic() + timeout_s
        while pending:
            for run_id in list(pending):
                state = await self.store.state(run_id)
                if state is not None and state.terminal:
                    states[run_id] = state
                    pending.discard(run_id)
            if pending and time.monotonic() > deadline:
                raise AssertionError(
                    f"{len(pending)} runs never ended, e.g. {sorted(pending)[:3]}\n{self.logs()}"
                )
            await asyncio.sleep(0.2)
        return states

    async def assert_exactly_once(self, run_ids: Iterable[str]) -> Counter[str]:
        """Every run: ended by exactly one event, the last (a terminal event, or the cancel of a run
        that never started); no step completed twice; returns statuses."""
        statuses: Counter[str] = Counter()
        for run_id in run_ids:
            entries = await self.events(run_id)
            events = [e for _, e in entries]
            state, ended = initial(run_id), []
            for index, (entry_id, event) in enumerate(entries):
                was_over = state.terminal
                state = apply(state, event, entry_id)
                if state.terminal and not was_over:
                    ended.append(index)
            names = [type(e).__name__ for e in events]
            assert ended == [len(events) - 1], (run_id, names)
            assert sum(is_terminal(e) for e in events) <= 1, (run_id, names)
            done = Counter(e.step for e in events if isinstance(e, StepCompleted))
            assert all(n == 1 for n in done.values()), (run_id, done)
            statuses[fold(run_id, entries).status] += 1
        return statuses

    async def assert_queues_drained(self) -> None:
        for queue in self.keys.queues:
            if await self.redis.exists(queue):
                pending = await self.redis.xpending(queue, RUNNERS_GROUP)
                assert pending["pending"] == 0, (queue, pending)

    async def assert_read_model_is_the_fold(self, run_ids: Iterable[str]) -> None:
        head: Any = await self.redis.xrevrange(self.keys.events, count=1)
        await asyncio.to_thread(wait_caught_up, self.projector.url, head[0][0].decode(), 60.0)
        rows = await asyncio.to_thread(db_states, self.db_path)
        for run_id in run_ids:
            assert rows[run_id] == fold(run_id, await self.events(run_id)), run_id

    def checksum(self) -> str:
        return checksum(self.db_path)

    async def runs_started_by(self, runner: str, run_ids: Iterable[str]) -> set[str]:
        """Runs whose latest attempt is ``runner``'s and that have not ended."""
        held = set()
        for run_id in run_ids:
            events = [e for _, e in await self.events(run_id)]
            starts = [e for e in events if isinstance(e, RunStarted)]
            if starts and starts[-1].runner_id == runner and not any(is_terminal(e) for e in events):
                held.add(run_id)
        return held


async def post_run(http: httpx.AsyncClient, symbol: str = "AAPL", **extra: Any) -> httpx.Response:
    # every submit here is a new run: an identical live one is not to be joined
    body = {"symbol": symbol, "analysts": ["market", "risk"], "join": False, **extra}
    return await http.post("/api/trading/runs", json=body)
