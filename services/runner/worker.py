"""A runner process: reads the queue, holds leases, takes over dead runners' runs, stops cleanly.

On the shared lifecycle (``shared.lifecycle.Service``): ``start()`` opens the clients and spawns
the loops; a stop request (SIGTERM, SIGINT, a fatal task) stops reading at once, gives running
runs the grace period, then releases what is left so another runner resumes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
from collections import Counter
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis

from services.runner.admission import Admission
from services.runner.eta import EtaBook
from services.runner.execution import Execution
from services.runner.factory import PipelineFactory, load_factory
from services.runner.health import HealthServer
from services.runner.leases import Found, Leases
from services.runner.metrics import metrics
from services.runner.queue import WorkQueue
from services.runner.runs import Executor
from services.runner.settings import RunnerSettings
from services.runner.stats import refresh_queue_stats
from services.runner.sweeper import OutcomeSweeper
from services.runner.watcher import CancelWatcher
from shared.batcher import ScriptBatcher
from shared.keys import RUNNERS_GROUP
from shared.lifecycle import Service, cancel_all
from shared.redis_io import connect, ensure_group
from shared.store import Entry, EventStore

if TYPE_CHECKING:
    import httpx

    from services.runner.pipeline.base import Runnable

logger = logging.getLogger(__name__)
RELEASE_WAIT_S = 10.0
"""How long released runs get to append RunRetrying and hand their entries back."""
POOL_WAIT_S = 30.0
"""How long a run's Redis command waits for a pooled connection before it fails."""
SUMMARY_INTERVAL_S = 30.0
"""Per-run lines are DEBUG; an INFO summary of what finished is logged this often (if any)."""
ANALYSIS_PACKAGE = "services.runner.pipeline"
"""Imported off the loop before the pipeline factory is called (every pipeline is built from it)."""
ETA_FLUSH_S = 1.0
"""Finished runs' durations reach the ETA lists in Redis this often (and when the worker stops)."""
BUILD_AFTER_IDLE_S = 1.0
"""An idle-time pipeline build starts this long after the queues first ran dry (at once when a
run needs it): not while the last runs' events are still being applied by the projector, whose
CPU the build's imports would take on a small machine."""


class Worker(Service):
    """One runner process's consumer: at most ``concurrency`` runs at a time, each its own task."""

    name = "runner"

    def __init__(self, settings: RunnerSettings, pipeline: Runnable | None = None) -> None:
        super().__init__(grace_s=settings.shutdown_grace_s)
        self.settings = settings
        self.pipeline = pipeline
        self.vanished = 0
        self.http: httpx.AsyncClient | None = None
        self._clients: list[Redis] = []
        self._factory: PipelineFactory | None = None
        self._building: asyncio.Task[None] | None = None
        self._build_now = asyncio.Event()
        self._summarized: Counter[str] = Counter()
        self._runs: set[asyncio.Task[None]] = set()
        self._readers: list[asyncio.Task[Any]] = []
        self._keepers: list[asyncio.Task[Any]] = []
        """Loops the runs need until they are released: lease renewal, cancel watch, lag probe."""
        self._server: HealthServer | None = None
        self.leases = Leases(settings.lease_renew_s)
        self.admission = Admission(
            settings.concurrency, settings.lease_s, settings.lease_renew_s, self.leases.held
        )

    # -- the lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Serve /healthz at once; wait for Redis (alive, not ready); then consume."""
        self._serve_health()
        s = self.settings  # a wrong name fails at start; registered pipelines load on first use
        self._factory = load_factory(s.pipeline, s.pipelines, s.common)
        self._open_clients()
        if not await self.retrying("reach Redis", self._ensure_groups):
            return
        self._build_components()
        await self.retrying("find the end of the cancels stream", self.watcher.open)
        await self.retrying("resume the runs our previous process left", self._resume_inherited)
        self._spawn_loops()
        s = self.settings
        logger.info("runner %s consuming (concurrency %d)", s.runner_id, s.concurrency)

    async def drain(self) -> None:
        """Stop reading now; give runs the grace period; release the rest to other runners."""
        await cancel_all(self._readers)
        if self._runs:
            logger.info("stopping: %d runs get %.1fs to finish", len(self._runs), self.grace_s)
            await asyncio.wait(self._runs, timeout=self.grace_s)
        for ex in list(self.leases.held.values()):
            ex.stop("released")
        if self._runs:
            await asyncio.wait(self._runs, timeout=RELEASE_WAIT_S)
        await cancel_all([*self._runs, *self._keepers, *([self._building] if self._building else [])])
        if self._server is not None:
            self._server.close()

    async def close(self) -> None:
        executor = getattr(self, "executor", None)
        if executor is not None:
            try:
                await executor.eta.flush()
            except Exception as exc:
                logger.warning("run durations not written to the ETA lists: %s", exc)
        with contextlib.suppress(Exception):
            await self.watcher.close()
        with contextlib.suppress(Exception):  # AttributeError too: stopped before it was built
            await self.scripts.aclose()
        if self.http is not None:
            with contextlib.suppress(Exception):
                await self.http.aclose()
        for client in self._clients:
            with contextlib.suppress(Exception):
                await client.aclose()

    def _open_clients(self) -> None:
        s, url = self.settings, self.settings.common.redis
        self.redis = connect(url, max_connections=s.redis_connections, wait_s=POOL_WAIT_S)
        self.reader = connect(url, blocking=True, max_connections=4, wait_s=POOL_WAIT_S)
        self.renewer = connect(url, max_connections=2, wait_s=POOL_WAIT_S)
        self._clients = [self.redis, self.reader, self.renewer]

    async def _ensure_groups(self) -> None:
        for queue in self.settings.common.keys.queues:
            await ensure_group(self.redis, queue, RUNNERS_GROUP)

    def _build_components(self) -> None:
        s = self.settings
        keys = s.common.keys
        # the runs' appends made in one turn of the loop share one round trip and one connection
        self.scripts = ScriptBatcher(self.redis)
        self.store = EventStore(self.redis, keys, run_ttl_s=s.common.run_ttl_s, appends=self.scripts)
        self.queue = WorkQueue(self.redis, self.reader, keys, s.runner_id, s.lease_ms, renewer=self.renewer)
        self.watcher = CancelWatcher(self.store, self.reader, keys, s.runner_id, self._on_cancel)
        self.executor = Executor(
            s, self.store, self.queue, self._pipeline, EtaBook(self.redis, keys), self.watcher, metrics()
        )

    def _spawn_loops(self) -> None:
        s = self.settings
        self._readers = [self.spawn(self._read_loop(), "read"), self.spawn(self._claim_loop(), "claim")]
        self._keepers = [
            self.spawn(self.leases.keep(self.queue, self.admission.renewed), "renew"),
            self.spawn(self.admission.probe(), "probe"),
            self.spawn(self.watcher.run(), "watch"),
        ]
        self.spawn(self.every(s.stats_interval_s, self._refresh_stats, first=True), "stats")
        self.spawn(self.every(SUMMARY_INTERVAL_S, self._summary), "summary")
        self.spawn(self.every(ETA_FLUSH_S, self.executor.eta.flush), "eta")
        self.spawn(self.every(s.outcome_sweep_s, OutcomeSweeper(self.redis, s.common.keys).tick), "outcomes")

    def _serve_health(self) -> None:
        """/healthz answers from the start (alive); /readyz once Redis answered and loops run."""
        s = self.settings
        if s.port:
            self._server = HealthServer(self._status, s.host, s.port, self.ready.is_set)
            self.spawn(self._serve_http(self._server), "http", fatal=True)

    async def _serve_http(self, server: HealthServer) -> None:
        """A port that cannot be bound stops the process (exit non-zero): unprobed is unmanaged."""
        try:
            await server.serve()
        except OSError as exc:
            logger.error("cannot serve /healthz and /metrics on %s:%d: %s", server.host, server.port, exc)
            raise

    # -- the pipeline ---------------------------------------------------------------------------

    async def _pipeline(self) -> Runnable:
        """The pipeline, built on first need or a second after the queues first run dry,
        whichever comes first; the analysis package is imported on a worker thread, so the loop
        keeps reading, renewing leases and answering /healthz meanwhile. No-op runs never wait
        for it. A build that fails stops the process (exit non-zero), as a failure at start would."""
        if self.pipeline is None:
            self._build_now.set()
            await asyncio.shield(self._start_build())  # a cancelled run must not cancel the build
        assert self.pipeline is not None
        return self.pipeline

    def _start_build(self) -> asyncio.Task[None]:
        if self._building is None:
            self._building = self.spawn(self._build(), "pipeline")
        return self._building

    async def _build(self) -> None:
        with contextlib.suppress(TimeoutError):  # idle: wait a little, unless a run needs it
            await asyncio.wait_for(self._build_now.wait(), BUILD_AFTER_IDLE_S)
        assert self._factory is not None
        try:
            await asyncio.to_thread(importlib.import_module, ANALYSIS_PACKAGE)
            from services.runner.http_pool import model_client

            self.http = model_client(self.settings.http_connections)  # one per run: a call never queues
            self.pipeline = self._factory(self.redis, self.http)
        except Exception as exc:
            logger.error("cannot build the pipeline %s: %s", self.settings.pipeline, exc)
            self.failure = exc
            self.request_stop()
            raise

    # -- status ---------------------------------------------------------------------------------

    def _status(self) -> dict[str, Any]:
        return {
            "runner_id": self.settings.runner_id,
            "pid": os.getpid(),  # `tickertape up` checks it started this process
            "executing": len(self.leases.held),
            "stopping": self.stopping.is_set(),
            "pipeline": self._pipeline_state(),
            "lease_pressure_s": round(self.admission.pressure_s, 3),
        }

    def _pipeline_state(self) -> str:
        """'built', 'building' or 'not built': a process that answers /healthz but has not built
        its pipeline yet still has start-up work to do (benchmarks wait for 'built')."""
        if self.pipeline is not None:
            return "built"
        return "not built" if self._building is None or self._building.done() else "building"

    async def _summary(self) -> None:
        """INFO line of the runs finished since the last one (per-run lines are DEBUG)."""
        now = Counter(self.executor.finished)
        delta = now - self._summarized
        self._summarized = now
        if delta:
            counts = ", ".join(f"{status} {n}" for status, n in sorted(delta.items()))
            logger.info(
                "runs finished in the last %.0fs: %s; executing %d",
                SUMMARY_INTERVAL_S,
                counts,
                len(self.leases.held),
            )

    async def _refresh_stats(self) -> None:
        await refresh_queue_stats(self.redis, self.settings.common.keys.queues, metrics())

    def _on_cancel(self, run_id: str, event: Any) -> None:
        self.executor.cancel(run_id, event)

    # -- taking work ----------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        block_ms = int(self.settings.read_block_s * 1000)
        while True:
            await self.admission.wait()
            try:
                batch = await self._read(block_ms)
                if len(batch) > self.admission.free:
                    await self._park(batch)
                elif batch:
                    self._dispatch(batch)
            except Exception:
                logger.exception("queue read failed; retrying")
                await asyncio.sleep(1.0)

    async def _read(self, block_ms: int) -> list[Found]:
        """Up to the admitted number of entries, high priority first, with their runs' events,
        in one round trip; only when both queues are empty does the reader block on both (COUNT 1)."""
        keys = self.settings.common.keys
        with self.admission.asking(self.admission.allowance()) as count:
            found = await self.queue.read_batch_with_runs(keys.queues, count, keys.run(""))
        if found:
            return [(job, self.store.decode_entries(raw)) for job, raw in found]
        if self.pipeline is None:
            self._start_build()  # idle: build the pipeline now rather than at the first real run
        # Not promised: an idle worker is always in this read, and the claim loop must still be
        # able to take over a dead runner's entry meanwhile (the read loop then parks its find).
        return [(job, None) for job in await self.queue.read_new(keys.queues, 1, block_ms)]

    async def _park(self, batch: list[Found]) -> None:
        """Dispatch what a blocking read brought as slots free up: a takeover may have filled
        them meanwhile, and one read over both queues may bring two entries. The parked keep
        their leases (``Leases.renew_once``)."""
        self.leases.parked = batch
        try:
            while self.leases.parked:
                await self.admission.wait()
                free = self.admission.free
                now, self.leases.parked = self.leases.parked[:free], self.leases.parked[free:]
                self._dispatch(now)
        finally:
            self.leases.parked = []

    async def _claim_loop(self) -> None:
        cursors = dict.fromkeys(self.settings.common.keys.queues, "0-0")
        await self.every(self.settings.claim_interval_s, lambda: self._claim_once(cursors), first=True)

    async def _resume_inherited(self) -> None:
        """Resume at once the runs an earlier process with our consumer name left pending."""
        for queue in self.settings.common.keys.queues:
            if self.admission.allowance() <= 0:
                return
            with self.admission.asking(self.admission.allowance()) as count:
                jobs = await self.queue.inherited(queue, count, self.leases.ids())
            for job in jobs:
                logger.info("resuming run %s left by our previous process", job.run_id)
                metrics().reclaims.inc()
            if jobs:
                self._dispatch([(job, None) for job in jobs])

    async def _claim_once(self, cursors: dict[str, str]) -> None:
        """Take over runs whose runner died, as far as admission allows; never our own."""
        for queue, cursor in cursors.items():
            if self.admission.allowance() <= 0:
                return
            with self.admission.asking(self.admission.allowance()) as count:
                batch = await self.queue.claim_idle(queue, cursor, count, self.leases.ids())
            cursors[queue] = batch.cursor
            self.vanished += batch.dropped
            if batch.kept:
                logger.warning("%d of our own runs were idle past the lease: kept", batch.kept)
                metrics().late_renewals.inc(batch.kept)
            for job in batch.jobs:
                logger.info("took over run %s (delivery %d)", job.run_id, job.deliveries)
                metrics().reclaims.inc()
            if batch.jobs:
                self._dispatch([(job, None) for job in batch.jobs])

    def _dispatch(self, batch: list[Found]) -> None:
        """Hold the entries and run each in its own task."""
        for ex, entries in self.leases.hold(batch):
            task = self.spawn(self._run(ex, entries), f"run-{ex.job.run_id}")
            self._runs.add(task)
            task.add_done_callback(self._runs.discard)

    async def _run(self, ex: Execution, entries: list[Entry] | None) -> None:
        try:
            await self.executor.handle(ex, entries)
        finally:
            self.leases.free(ex)
            self.admission.freed.set()
