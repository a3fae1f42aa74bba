"""A runner process: reads the queue, holds leases, takes over dead runners' runs, stops cleanly.

saq-style lifecycle: ``start()`` opens everything, runs the loops and waits for the stop event
(set by SIGTERM/SIGINT or ``request_stop()``); it always ends with ``stop()``, which stops reading
at once, gives running runs the grace period, then releases what is left to other runners.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import time
from collections import Counter
from collections.abc import Coroutine, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from services.runner.eta import EtaBook
from services.runner.execution import Execution
from services.runner.factory import load_factory
from services.runner.health import HealthServer
from services.runner.metrics import metrics
from services.runner.queue import Job, WorkQueue
from services.runner.runs import Executor, Noop
from services.runner.settings import RunnerSettings
from services.runner.stats import refresh_queue_stats
from services.runner.watcher import CancelWatcher
from shared.keys import RUNNERS_GROUP
from shared.redis_io import connect, ensure_group
from shared.store import Entry, EventStore

if TYPE_CHECKING:
    import httpx

    from services.runner.pipeline.base import Runnable

logger = logging.getLogger(__name__)
_RELEASE_WAIT_S = 10.0
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


class Worker:
    """One runner process's consumer: ``concurrency`` runs at a time."""

    def __init__(self, settings: RunnerSettings, pipeline: Runnable | None = None) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self.ready = asyncio.Event()
        self.vanished = 0
        self.http: httpx.AsyncClient | None = None
        self._failure: BaseException | None = None
        self._building: asyncio.Task[None] | None = None
        self._build_now = asyncio.Event()
        self._summarized: Counter[str] = Counter()
        self._stop = asyncio.Event()
        self._stopping = False
        self._held: dict[str, Execution] = {}
        self._asked = 0
        """Entries asked of Redis by reads and claims still in flight: their slots are taken."""
        self._parked: list[tuple[Job, list[Entry] | None]] = []
        """Entries a blocking read brought while a takeover took their slots (see ``_park``)."""
        self._slot_freed = asyncio.Event()
        self._runs: set[asyncio.Task[None]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._readers: list[asyncio.Task[None]] = []
        self._server: HealthServer | None = None

    def request_stop(self) -> None:
        """Called from a signal handler: ``start()`` returns after a graceful stop."""
        self._stop.set()

    async def start(self) -> None:
        """Run until the stop event is set; always ends with ``stop()``."""
        try:
            self._serve_health()
            if not await self._open():
                return
            self._spawn_loops()
            self.ready.set()
            logger.info(
                "runner %s consuming (concurrency %d)", self.settings.runner_id, self.settings.concurrency
            )
            await self._stop.wait()
        finally:
            await self.stop()
        if self._failure is not None:  # e.g. TT_RUNNER_PIPELINE names nothing: exit non-zero
            raise self._failure

    async def _open(self) -> bool:
        """Build clients and wait for Redis; False when asked to stop before it answered."""
        s = self.settings
        url, keys = s.common.redis, s.common.keys
        self._factory = load_factory(s.pipeline)  # a wrong name fails at start; built later
        self.redis: Redis = connect(url)
        self.reader: Redis = connect(url, blocking=True, max_connections=4)
        if not await self._wait_for_redis():
            return False
        self.store = EventStore(self.redis, keys, run_ttl_s=s.common.run_ttl_s)
        self.queue = WorkQueue(self.redis, self.reader, keys, s.runner_id, s.lease_ms)
        self.watcher = CancelWatcher(self.store, self.reader, keys, s.runner_id, self._on_cancel)
        self.executor = Executor(
            s, self.store, self.queue, self._pipeline, EtaBook(self.redis, keys), self.watcher, metrics()
        )
        return True

    async def _pipeline(self) -> Runnable:
        """The pipeline, built on first need or a second after the queues first run dry,
        whichever comes first; the analysis package is imported on a worker thread, so the loop keeps reading,
        renewing leases and answering /healthz meanwhile. No-op runs never wait for it. A build
        that fails stops the process (exit non-zero), as a failure at start would."""
        if self.pipeline is None:
            self._build_now.set()
            await asyncio.shield(self._start_build())  # a cancelled run must not cancel the build
        assert self.pipeline is not None
        return self.pipeline

    def _start_build(self) -> asyncio.Task[None]:
        if self._building is None:
            self._building = asyncio.create_task(self._build(), name="runner-pipeline")
            self._building.add_done_callback(_retrieve)
        return self._building

    async def _build(self) -> None:
        with contextlib.suppress(TimeoutError):  # idle: wait a little, unless a run needs it
            await asyncio.wait_for(self._build_now.wait(), BUILD_AFTER_IDLE_S)
        try:
            await asyncio.to_thread(importlib.import_module, ANALYSIS_PACKAGE)
            import httpx

            self.http = httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=10.0))
            self.pipeline = self._factory(self.redis, self.http)
        except Exception as exc:
            logger.error("cannot build the pipeline %s: %s", self.settings.pipeline, exc)
            self._failure = exc
            self._stop.set()
            raise

    async def _wait_for_redis(self) -> bool:
        """Create the groups, retrying with backoff while Redis is unreachable (not-ready, alive)."""
        delay = 0.1
        while not self._stop.is_set():
            try:
                for queue in self.settings.common.keys.queues:
                    await ensure_group(self.redis, queue, RUNNERS_GROUP)
                return True
            except (RedisConnectionError, RedisTimeoutError) as exc:
                logger.warning("redis not reachable yet (%s); retrying in %.1fs", exc, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)
            delay = min(delay * 2, 5.0)
        return False

    def _on_cancel(self, run_id: str, event: Any) -> None:
        self.executor.cancel(run_id, event)

    def _spawn_loops(self) -> None:
        s = self.settings
        self._readers = [self._spawn(self._read_loop(), "read"), self._spawn(self._claim_loop(), "claim")]
        self._loops += [
            self._spawn(self._renew_loop(), "renew"),
            self._spawn(self.watcher.run(), "watch"),
            self._spawn(self._every(s.stats_interval_s, self._refresh_stats), "stats"),
            self._spawn(self._every(SUMMARY_INTERVAL_S, self._summary, first=False), "summary"),
            self._spawn(self._every(ETA_FLUSH_S, self.executor.eta.flush, first=False), "eta"),
        ]

    def _serve_health(self) -> None:
        """/healthz answers from the start (alive); /readyz once Redis answered and loops run."""
        s = self.settings
        if s.port:
            self._server = HealthServer(self._status, s.host, s.port, self.ready.is_set)
            self._loops.append(self._spawn(self._serve_http(self._server), "http"))

    async def _serve_http(self, server: HealthServer) -> None:
        """A port that cannot be bound stops the process (exit non-zero): unprobed is unmanaged."""
        try:
            await server.serve()
        except OSError as exc:
            logger.error("cannot serve /healthz and /metrics on %s:%d: %s", server.host, server.port, exc)
            self._failure = exc
            self._stop.set()

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        return asyncio.create_task(coro, name=f"runner-{name}")

    def _status(self) -> dict[str, Any]:
        return {
            "runner_id": self.settings.runner_id,
            "executing": len(self._held),
            "stopping": self._stopping,
            "pipeline": self._pipeline_state(),
        }

    def _pipeline_state(self) -> str:
        """'built', 'building' or 'not built': a process that answers /healthz but has not built
        its pipeline yet still has start-up work to do (benchmarks wait for 'built')."""
        if self.pipeline is not None:
            return "built"
        return "not built" if self._building is None or self._building.done() else "building"

    @property
    def free_slots(self) -> int:
        """Slots neither held nor promised to a read or claim in flight (the read loop and the
        claim loop run side by side: each must not count a slot the other's request may fill)."""
        return self.settings.concurrency - len(self._held) - self._asked

    @contextlib.contextmanager
    def _asking(self, count: int) -> Iterator[int]:
        """Promise ``count`` slots to one request; what it brings is held before they are
        given back (``_dispatch`` runs right after it, with no await in between), and whoever
        waits for a slot is woken then."""
        self._asked += count
        try:
            yield count
        finally:
            self._asked -= count
            if count:
                self._slot_freed.set()  # what the request did not fill is free again

    # -- taking work --------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        block_ms = int(self.settings.read_block_s * 1000)
        while True:
            if self.free_slots <= 0:
                self._slot_freed.clear()
                await self._slot_freed.wait()
                continue
            try:
                batch = await self._read(block_ms)
                if len(batch) > self.free_slots:
                    await self._park(batch)
                elif batch:
                    self._dispatch(batch)
            except Exception:
                logger.exception("queue read failed; retrying")
                await asyncio.sleep(1.0)

    async def _read(self, block_ms: int) -> list[tuple[Job, list[Entry] | None]]:
        """Up to the free slots' worth of entries, high priority first, with their runs' events,
        in one round trip; only when both queues are empty does the reader block on both (COUNT 1)."""
        keys = self.settings.common.keys
        with self._asking(self.free_slots) as free:
            found = await self.queue.read_batch_with_runs(keys.queues, free, keys.run(""))
        if found:
            return [(job, self.store.decode_entries(raw)) for job, raw in found]
        if self.pipeline is None:
            self._start_build()  # idle: build the pipeline now rather than at the first real run
        # Not promised: an idle worker is always in this read, and the claim loop must still be
        # able to take over a dead runner's entry meanwhile (the read loop then parks its find).
        return [(job, None) for job in await self.queue.read_new(keys.queues, 1, block_ms)]

    async def _park(self, batch: list[tuple[Job, list[Entry] | None]]) -> None:
        """Dispatch what a blocking read brought as slots free up: a takeover may have filled
        them meanwhile, and one read over both queues may bring two entries. The parked keep
        their leases (``_renew_once``); one another runner took over is dropped."""
        self._parked = batch
        try:
            while self._parked:
                if self.free_slots <= 0:
                    self._slot_freed.clear()
                    await self._slot_freed.wait()
                    continue
                now, self._parked = self._parked[: self.free_slots], self._parked[self.free_slots :]
                self._dispatch(now)
        finally:
            self._parked = []

    async def _claim_loop(self) -> None:
        cursors = dict.fromkeys(self.settings.common.keys.queues, "0-0")
        while True:
            try:
                await self._claim_once(cursors)
            except Exception:
                logger.exception("claiming idle entries failed; retrying")
            await asyncio.sleep(self.settings.claim_interval_s)

    async def _claim_once(self, cursors: dict[str, str]) -> None:
        for queue, cursor in cursors.items():
            if self.free_slots <= 0:
                return
            with self._asking(self.free_slots) as free:
                batch = await self.queue.claim_idle(queue, cursor, free, list(self._held))
            cursors[queue] = batch.cursor
            self.vanished += batch.dropped
            for job in batch.jobs:
                logger.info("took over run %s (delivery %d)", job.run_id, job.deliveries)
                metrics().reclaims.inc()
            if batch.jobs:
                self._dispatch([(job, None) for job in batch.jobs])

    def _dispatch(self, batch: Sequence[tuple[Job, list[Entry] | None]]) -> None:
        """Hold the entries and handle them as one batch (one task; slow runs get their own).
        Each job comes with its run's events when the read brought them (None: not read yet)."""
        items = self._hold(batch)
        self._track(asyncio.create_task(self._run_batch(items), name=f"batch-{batch[0][0].entry_id}"))

    def _hold(
        self, batch: Sequence[tuple[Job, list[Entry] | None]]
    ) -> list[tuple[Execution, list[Entry] | None]]:
        items = [(Execution(job), entries) for job, entries in batch]
        for ex, _ in items:
            self._held[ex.job.entry_id] = ex
        metrics().executing.set(len(self._held))
        return items

    def _track(self, task: asyncio.Task[None]) -> None:
        self._runs.add(task)
        task.add_done_callback(self._runs.discard)

    async def _run_batch(self, items: list[tuple[Execution, list[Entry] | None]]) -> None:
        """No-op runs are completed here, a batch per round trip, and that same round trip reads
        the next batch (as many entries as it frees, so the process never holds more than its
        concurrency) for as long as the queues supply work; every other run gets its own task."""
        held = [ex for ex, _ in items]
        try:
            while items:
                ready = await self.executor.with_events(items)
                noops, rest = self.executor.split(ready)
                for ex, entries in rest:
                    held.remove(ex)
                    self._track(asyncio.create_task(self._run(ex, entries), name=f"run-{ex.job.run_id}"))
                if not noops:
                    return
                found = await self._finish_noops(noops)
                self._free([ex for ex, _, _ in noops])
                items = self._hold(found)
                held = [ex for ex, _ in items]
        except Exception:
            logger.exception("a batch of %d entries left pending after an error", len(held))
        finally:
            self._free(held)

    async def _finish_noops(self, noops: Sequence[Noop]) -> list[tuple[Job, list[Entry] | None]]:
        """Complete the no-op runs and, unless stopping, read the next batch in the same trip."""
        keys = self.settings.common.keys
        then = [] if self._stopping else [self.queue.read_call(keys.queues, len(noops), keys.run(""))]
        extra = await self.executor.finish_noops(noops, then)
        if not extra:
            return []
        if isinstance(extra[0], Exception):
            logger.error("queue read failed: %s", extra[0])
            return []
        found = self.queue.parse_read(keys.queues, extra[0])
        return [(job, self.store.decode_entries(raw)) for job, raw in found]

    async def _run(self, ex: Execution, entries: list[Entry]) -> None:
        try:
            await self.executor.handle(ex, entries)
        finally:
            self._free([ex])

    def _free(self, exs: Sequence[Execution]) -> None:
        if not exs:
            return
        for ex in exs:
            if self._held.get(ex.job.entry_id) is ex:
                del self._held[ex.job.entry_id]
        metrics().executing.set(len(self._held))
        self._slot_freed.set()

    # -- keeping leases -----------------------------------------------------------------------

    async def _renew_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.lease_renew_s)
            try:
                await self._renew_once()
            except Exception:
                logger.exception("lease renewal failed; retrying")

    async def _renew_once(self) -> None:
        by_queue: dict[str, list[str]] = {}
        for job in [ex.job for ex in self._held.values()] + [job for job, _ in self._parked]:
            by_queue.setdefault(job.queue, []).append(job.entry_id)
        for queue, ids in by_queue.items():
            kept = await self.queue.renew(queue, ids)
            for entry_id in set(ids) - kept:
                lost = self._held.get(entry_id)
                if lost is not None and lost.stop("lost"):
                    logger.warning("lease of run %s lost to another runner", lost.job.run_id)
            self._parked = [
                (job, raw) for job, raw in self._parked if job.queue != queue or job.entry_id in kept
            ]

    async def _every(self, interval_s: float, action: Any, *, first: bool = True) -> None:
        if not first:
            await asyncio.sleep(interval_s)
        while True:
            try:
                await action()
            except Exception:
                logger.exception("%s failed", getattr(action, "__name__", "periodic task"))
            await asyncio.sleep(interval_s)

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
                len(self._held),
            )

    async def _refresh_stats(self) -> None:
        await refresh_queue_stats(self.redis, self.settings.common.keys.queues, metrics())

    # -- stopping -----------------------------------------------------------------------------

    async def stop(self) -> None:
        """Stop reading now; give runs the grace period; release the rest; close everything."""
        if self._stopping:
            return
        self._stopping = True
        await _cancel_all(self._readers)
        if self._runs:
            logger.info(
                "stopping: %d runs get %.1fs to finish", len(self._runs), self.settings.shutdown_grace_s
            )
            await asyncio.wait(self._runs, timeout=self.settings.shutdown_grace_s)
        for ex in list(self._held.values()):
            ex.stop("released")
        if self._runs:
            await asyncio.wait(self._runs, timeout=_RELEASE_WAIT_S)
        await _cancel_all([*self._runs, *self._loops, *([self._building] if self._building else [])])
        await self._close()

    async def _close(self) -> None:
        executor = getattr(self, "executor", None)
        if executor is not None:
            try:
                await executor.eta.flush()
            except Exception as exc:
                logger.warning("run durations not written to the ETA lists: %s", exc)
        if self._server is not None:
            self._server.close()
        with contextlib.suppress(Exception):
            await self.watcher.close()
        for closer in ("http", "reader", "redis"):
            client = getattr(self, closer, None)
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.aclose()
        logger.info("runner %s stopped", self.settings.runner_id)


def _retrieve(task: asyncio.Task[None]) -> None:
    """Mark a failed background task's exception as seen (it was logged where it happened)."""
    if not task.cancelled():
        task.exception()


async def _cancel_all(tasks: list[asyncio.Task[None]] | set[asyncio.Task[None]]) -> None:
    """Cancel until done: a cancellation swallowed inside a client library is cancelled again."""
    pending = [t for t in tasks if not t.done()]
    deadline = time.monotonic() + _RELEASE_WAIT_S
    while pending and time.monotonic() < deadline:
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=0.1)
        pending = [t for t in pending if not t.done()]
    for task in pending:
        logger.error("task %s ignores cancellation", task.get_name())
