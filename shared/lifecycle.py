"""One lifecycle for every service: start → serve until asked to stop → stop with grace.

Modelled on saq's worker. A service subclasses ``Service``, opens its clients and spawns its
loops in ``start()``, and closes what it opened in ``close()``. ``run()`` is the whole life:
start, wait for the stop event (a signal, a fatal loop, a test), then stop — in-flight tasks get
``grace_s`` to end on their own, then are cancelled with a deadline — and close, always. Every
task is spawned through ``spawn()`` and so tracked; periodic and retrying loops are written once
here (``every``, ``retrying``), and they end when the service stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import uvicorn

logger = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
CANCEL_DEADLINE_S = 5.0
"""How long cancelled tasks get to unwind before they are reported as stuck."""


class Service:
    """Base of the gateway, runner and projector processes (and of test harnesses)."""

    name = "service"

    def __init__(self, *, grace_s: float = 5.0) -> None:
        self.grace_s = grace_s
        self.stopping = asyncio.Event()
        """Set once a stop is requested; loops watch it to end between iterations."""
        self.ready = asyncio.Event()
        """Set once ``start()`` has returned."""
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stopped = False
        self._servers: list[Any] = []
        self.failure: BaseException | None = None
        """A spawned task's exception that stopped the service (re-raised by ``run()``)."""

    # -- to override ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Open clients and spawn the service's loops."""

    async def drain(self) -> None:
        """Called first on stop, before tasks are waited for: stop taking new work."""

    async def close(self) -> None:
        """Close what ``start()`` opened; called once, after every task has ended."""

    # -- the lifecycle -------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Ask ``run()`` to stop; safe from a signal handler and idempotent."""
        self.stopping.set()

    async def run(self) -> None:
        """Start, serve until a stop is requested, then stop; re-raise a fatal task's error."""
        try:
            await self.start()
            self.ready.set()
            await self.stopping.wait()
        finally:
            await self.stop()
        if self.failure is not None:
            raise self.failure

    async def stop(self) -> None:
        """Drain, give tasks ``grace_s`` to end, cancel the rest, close. Runs once."""
        if self._stopped:
            return
        self._stopped = True
        self.stopping.set()
        try:
            for server in self._servers:
                server.should_exit = True
            await self.drain()
            pending = [t for t in self._tasks if not t.done()]
            if pending:
                await asyncio.wait(pending, timeout=self.grace_s)
            await cancel_all(self._tasks)
        finally:
            await self.close()
        logger.info("%s stopped", self.name)

    # -- tasks ---------------------------------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str, *, fatal: bool = False) -> asyncio.Task[Any]:
        """A tracked task. ``fatal``: if it raises, the service stops and ``run()`` re-raises."""
        task = asyncio.get_running_loop().create_task(coro, name=f"{self.name}-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._discard if not fatal else self._fatal_done)
        return task

    def serve_http(
        self, config: uvicorn.Config, sockets: list[socket.socket] | None = None
    ) -> uvicorn.Server:
        """Serve an ASGI app with uvicorn as one of the service's tasks (on ``sockets`` if given,
        else on the config's host and port).

        The server ends when the service stops (uvicorn's own graceful shutdown, bounded by the
        config's ``timeout_graceful_shutdown``); if it ends first (a signal it caught, a port in
        use), the service stops too. uvicorn is imported here, not with this module: the runner
        serves no ASGI app, and its start (a restart after a crash too) should not wait for it.
        """
        import uvicorn

        server = uvicorn.Server(config)
        self._servers.append(server)
        self.spawn(server.serve(sockets=sockets), "http", fatal=True)
        return server

    @property
    def tasks(self) -> frozenset[asyncio.Task[Any]]:
        return frozenset(self._tasks)

    def _discard(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("task %s failed", task.get_name(), exc_info=task.exception())

    def _fatal_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled() or self.stopping.is_set():
            return
        error = task.exception()
        if error is None and any(s.should_exit for s in self._servers):
            logger.info("%s: its HTTP server was asked to exit: stopping", self.name)
        else:
            self.failure = error or RuntimeError(f"task {task.get_name()} ended")
            logger.error("task %s ended: stopping %s", task.get_name(), self.name, exc_info=error)
        self.request_stop()

    # -- loops ---------------------------------------------------------------------------------

    async def sleep(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True if the service is stopping (woken early)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), seconds)
        return self.stopping.is_set()

    async def every(
        self, interval_s: float, job: Callable[[], Awaitable[object]], *, first: bool = False
    ) -> None:
        """Run ``job`` every ``interval_s`` until stopping (at once too when ``first``).

        A failing job is logged and tried again on the next tick; ``interval_s <= 0`` disables it.
        """
        if interval_s <= 0:
            return
        if not first and await self.sleep(interval_s):
            return
        while True:
            try:
                await job()
            except Exception:
                logger.exception("%s: scheduled %s failed", self.name, _name(job))
            if await self.sleep(interval_s):
                return

    async def retrying(
        self, what: str, action: Callable[[], Awaitable[None]], *, base_s: float = 0.1, cap_s: float = 5.0
    ) -> bool:
        """Call ``action`` until it succeeds, backing off from ``base_s`` doubling to ``cap_s``.

        False if the service began stopping first.
        """
        delay = base_s
        while not self.stopping.is_set():
            try:
                await action()
                return True
            except Exception as exc:
                logger.warning("%s: could not %s (%s); retrying in %.1fs", self.name, what, exc, delay)
                if await self.sleep(delay):
                    break
                delay = min(delay * 2, cap_s)
        return False


async def cancel_all(tasks: Iterable[asyncio.Task[Any]], deadline_s: float = CANCEL_DEADLINE_S) -> None:
    """Cancel until done: a cancellation swallowed inside a client library is cancelled again."""
    pending = [t for t in tasks if not t.done()]
    deadline = time.monotonic() + deadline_s
    while pending and time.monotonic() < deadline:
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=0.1)
        pending = [t for t in pending if not t.done()]
    for task in pending:
        logger.error("task %s ignores cancellation", task.get_name())


async def serve(
    service: Service, signals: Iterable[signal.Signals] = (signal.SIGTERM, signal.SIGINT)
) -> None:
    """``service.run()`` with the signals asking it to stop (the process's main coroutine)."""
    loop = asyncio.get_running_loop()
    for sig in signals:
        loop.add_signal_handler(sig, service.request_stop)
    try:
        await service.run()
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)


def parent_death_hook(sig: signal.Signals = signal.SIGTERM) -> Callable[[], None] | None:
    """A pre-exec hook that makes the child get ``sig`` when its parent dies, however it dies.

    The libc function is looked up here, in the parent: the hook itself runs between fork and
    exec, where only already-resolved calls are safe. The signal follows the *thread* that forked,
    so every child is started from the parent's main thread.
    """
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None  # not Linux: the parent's signal handlers are the only guard
    number = int(sig)
    return lambda: prctl(PR_SET_PDEATHSIG, number, 0, 0, 0)


def main(service_factory: Callable[[], Service]) -> None:
    """Run a service in this process on uvloop until a signal stops it."""
    import uvloop

    async def _main() -> None:
        await serve(service_factory())

    uvloop.run(_main())


def _name(job: Callable[..., object]) -> str:
    return getattr(job, "__name__", None) or type(job).__name__
