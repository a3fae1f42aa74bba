"""The projector's life: lock, restore or migrate, consume, serve, snapshot, publish, retain."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from datetime import timedelta
from typing import Any

import aiosqlite
import uvicorn
from redis.asyncio import Redis

from services.projector import lag, snapshots
from services.projector.app import create_app
from services.projector.consumer import Consumer
from services.projector.db import open_db
from services.projector.locking import exclusive
from services.projector.metrics import metrics
from services.projector.projection import Projection
from services.projector.queries import Queries
from services.projector.reconcile import Reconciler
from services.projector.retention import Policy, Retention
from services.projector.schema import migrate
from services.projector.settings import ProjectorSettings
from services.projector.webhooks import DeliveryPolicy, WebhookDeliverer
from shared import streamids
from shared.clock import Now
from shared.lifecycle import Service
from shared.redis_io import connect
from shared.store import EventStore
from shared.webhooks import AllowList

logger = logging.getLogger(__name__)

_STOP_GRACE_S = 5.0
_GC_THRESHOLDS = (50_000, 20, 100)


def tune_gc() -> None:
    """Process-wide, for the projector's own process: fewer, larger garbage collections.

    A catch-up batch allocates tens of objects an event (entries, events, states), nearly all
    short-lived: a young generation this large lets most of them die before a collection looks
    at them. Objects alive at start (modules, the app) are frozen out of collections
    (measurements: docs/benchmarks.md, "Projector").
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*_GC_THRESHOLDS)


class ProjectorService(Service):
    """One projector replica: its database, its consumer group, its schedules and its HTTP API.

    ``start()`` alone (as the tests do) consumes and keeps the schedules without serving HTTP;
    ``run()`` under ``shared.lifecycle.serve`` (the process) also serves the internal API.
    """

    name = "projector"

    def __init__(self, settings: ProjectorSettings, *, now: Now | None = None, http: bool = False) -> None:
        """``now``: a clock for tests (by default Redis's); ``http``: serve the internal API too."""
        super().__init__(grace_s=_STOP_GRACE_S)
        self.settings = settings
        self.now = now
        self.http = http
        self.lock = asyncio.Lock()
        self._exit = contextlib.ExitStack()
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._redis: Redis | None = None
        self._blocking: Redis | None = None
        self._projection: Projection | None = None

    @property
    def redis(self) -> Redis:
        assert self._redis is not None, "projector not started"
        return self._redis

    @property
    def projection(self) -> Projection:
        assert self._projection is not None, "projector not started"
        return self._projection

    @property
    def queries(self) -> Queries:
        assert self._reader is not None, "projector not started"
        return Queries(self._reader)

    async def start(self) -> None:
        s = self.settings
        self._exit.enter_context(exclusive(s.lock_path))
        await asyncio.to_thread(self._prepare_database)
        self._writer = await open_db(s.db_path)
        self._reader = await open_db(s.db_path, readonly=True)
        self._projection = Projection(self._writer)
        await self._projection.load()
        self._redis = connect(s.common.redis)
        self._blocking = connect(s.common.redis, blocking=True)
        retention = self.retention()
        self.spawn(self._consume(), "consumer")
        self.spawn(self.every(s.snapshot_interval_s, self.snapshot), "snapshots")
        self.spawn(self.every(s.publish_interval_s, retention.publish, first=True), "publish")
        self.spawn(self.every(s.retention_interval_s, retention.run_once), "retention")
        self.spawn(self._reconcile(), "reconciler")
        if s.webhook_interval_s > 0:
            self.spawn(self._webhooks(), "webhooks")
        if self.http:
            config = uvicorn.Config(
                create_app(self), host=s.host, port=s.port, log_config=None, lifespan="off",
                timeout_graceful_shutdown=int(_STOP_GRACE_S),
            )  # fmt: skip
            self.serve_http(config)
        logger.info(
            "projector %s (group %s) started at checkpoint %s", s.name, s.group, self._projection.checkpoint
        )

    async def close(self) -> None:
        for db in (self._writer, self._reader):
            if db is not None:
                await db.close()
        for client in (self._redis, self._blocking):
            if client is not None:
                await client.aclose()
        self._exit.close()

    async def _webhooks(self) -> None:
        """Derive deliveries from the log and send those due (services/projector/webhooks.py)."""
        s = self.settings
        assert self._blocking is not None
        store = EventStore(self._blocking, s.common.keys, run_ttl_s=s.common.run_ttl_s)
        policy = DeliveryPolicy(
            AllowList.parse(s.common.webhook_allowed_hosts),
            base_backoff_s=s.webhook_backoff_s,
            max_backoff_s=s.webhook_max_backoff_s,
        )
        deliverer = WebhookDeliverer(
            self._blocking, store, policy, consumer=s.consumer, endpoints=s.webhook_endpoints
        )
        try:
            if not await self.retrying("create the webhooks group", deliverer.ensure_group):
                return
            block_ms = max(int(s.webhook_interval_s * 1000), 1)
            self.spawn(
                self.every(s.webhook_interval_s, deliverer.deliver_due, first=True), "webhook-delivery"
            )
            await self.every(0.001, lambda: deliverer.derive(block_ms), first=True)
        finally:
            await deliverer.close()

    def retention(self) -> Retention:
        s = self.settings
        policy = Policy(
            history=timedelta(days=s.history_days),
            history_action=s.history_action,
            run_stream_ttl=timedelta(seconds=s.common.run_ttl_s),
            log_retention=timedelta(seconds=s.log_retention_s),
            queue_retention=timedelta(seconds=s.queue_retention_s),
            snapshot_dir=s.snapshot_dir if s.snapshot_interval_s > 0 else None,
            horizon=timedelta(seconds=s.horizon_s),
        )
        assert self._writer is not None
        return Retention(
            self._writer, self.redis, s.common.keys, policy,
            checkpoint=lambda: self.projection.checkpoint, lock=self.lock, now=self.now, name=s.name,
        )  # fmt: skip

    def reconciler(self) -> Reconciler:
        assert self._writer is not None
        return Reconciler(
            self._writer, self.redis, self.settings.common.keys,
            grace=timedelta(seconds=self.settings.reconcile_grace_s),
            checkpoint=lambda: self.projection.checkpoint, lock=self.lock, now=self.now,
        )  # fmt: skip

    async def _reconcile(self) -> None:
        """Once after catching up with the log as it was at start, then on the schedule."""
        interval = self.settings.reconcile_interval_s
        if interval <= 0:
            return
        reconciler = self.reconciler()
        head = await self._start_head()
        while not self.stopping.is_set() and streamids.after(head, self.projection.checkpoint):
            await self.sleep(0.2)
        if self.stopping.is_set():
            return
        await self.every(interval, reconciler.run_once, first=True)

    async def _start_head(self) -> str:
        """The log's head ID when Redis first answers (retrying while it does not)."""
        head = streamids.ZERO

        async def read() -> None:
            nonlocal head
            entries: Any = await self.redis.xrevrange(self.settings.common.keys.events, count=1)
            head = streamids.ZERO if not entries else _text(entries[0][0])

        await self.retrying("read the log head", read)
        return head

    async def snapshot(self) -> snapshots.Snapshot:
        s = self.settings
        return await asyncio.to_thread(snapshots.take, s.db_path, s.snapshot_dir, s.snapshot_keep)

    async def checkpoint(self) -> lag.Checkpoint:
        s = self.settings
        measured = await lag.measure(self.redis, s.common.keys.events, self.projection.checkpoint, s.group)
        metrics().lag_entries.set(measured.lag)
        metrics().lag_seconds.set(measured.lag_seconds)
        return measured

    def _prepare_database(self) -> None:
        s = self.settings
        if not s.db_path.exists():
            latest = snapshots.latest(s.snapshot_dir)
            if latest is not None:
                snapshots.restore(latest, s.db_path)
        migrate(s.db_path)

    async def _consume(self) -> None:
        assert self._blocking is not None
        s = self.settings
        consumer = Consumer(
            self.projection, self.redis, self._blocking, s.common.keys,
            consumer=s.consumer, batch_size=s.batch_size, batch_max=s.batch_max,
            batch_wait_ms=s.batch_wait_ms, lock=self.lock, group=s.group,
        )  # fmt: skip
        if await self.retrying("prepare the consumer group", consumer.prepare):
            await consumer.run(self.stopping)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
