"""Several gateway processes on one port: a supervisor and ``TT_GATEWAY_WORKERS`` workers.

A gateway process writes every frame to each of its SSE clients itself (a task wake-up, an ASGI
``send`` and a kernel write per client and frame), so what one process can fan out is bounded by
one core; the machine's other cores serve clients only from other processes (docs/benchmarks.md,
"Several gateway processes per machine"). Each worker is a whole gateway — app, hub, Redis
clients — started as ``python -m services.gateway`` with a process id of its own, listening on
a socket of its own bound with SO_REUSEPORT: the kernel spreads new connections evenly over the
workers' sockets (one socket shared by all would hand most of them to whichever worker wakes
first). Workers share nothing but Redis, which already holds what a client needs across
processes: a stream resumes from its ID on any worker as on any replica. What is per process is
per worker: the per-user stream cap (``TT_SSE_MAX_PER_USER``), the hub's memory. Prometheus
metrics are summed over the workers (prometheus_client's multiprocess mode).

The supervisor holds the port (bound, never listening, so it takes no connection): a busy port
fails at once, and a worker restarting cannot lose it. It starts the workers and stops with them:
a worker that dies stops the gateway, and what started it (``tickertape up``, the container
runtime) starts it again whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
from pathlib import Path

from services.gateway.settings import GatewaySettings
from shared import lifecycle

logger = logging.getLogger(__name__)

METRICS_DIR = "PROMETHEUS_MULTIPROC_DIR"


class WorkerExited(Exception):
    """A gateway worker ended while the gateway was serving."""


def shared_port(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` with SO_REUSEPORT (not listening yet)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def worker_env(settings: GatewaySettings, port: int, index: int, metrics_dir: Path) -> dict[str, str]:
    """A worker's environment: the supervisor's, with the port resolved, a process id of its own
    and the supervisor's session secret (a random one per worker would make a browser session
    signed by one worker unknown to the others)."""
    return {
        **os.environ,
        "TT_SESSION_SECRET": settings.session_secret,
        "TT_GATEWAY_WORKERS": "1",
        "TT_GATEWAY_PORT": str(port),
        "TT_GATEWAY_PROCESS_ID": f"{settings.process_id}-w{index}",
        "TT_GATEWAY_SUPERVISOR_PID": str(os.getpid()),
        METRICS_DIR: str(metrics_dir),
    }


class Supervisor(lifecycle.Service):
    """Starts ``settings.workers`` gateway workers on one port and stops with them."""

    name = "gateway"

    def __init__(self, settings: GatewaySettings, *, grace_s: float = 10.0) -> None:
        super().__init__(grace_s=grace_s)
        self.settings = settings
        self.workers: list[asyncio.subprocess.Process] = []
        self._held: socket.socket | None = None
        self._metrics_dir: Path | None = None

    async def start(self) -> None:
        self._held = shared_port(self.settings.host, self.settings.port)
        port: int = self._held.getsockname()[1]
        self._metrics_dir = Path(tempfile.mkdtemp(prefix="tt-gateway-metrics-"))
        # A supervisor killed outright takes its workers with it, as a one-process gateway's death
        # cuts its clients at once (they resume elsewhere); a stop asked of it is passed on as SIGTERM.
        dies_with_it = lifecycle.parent_death_hook(signal.SIGKILL)
        for index in range(self.settings.workers):
            worker = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "services.gateway",
                env=worker_env(self.settings, port, index, self._metrics_dir),
                stdin=asyncio.subprocess.DEVNULL, preexec_fn=dies_with_it,
            )  # fmt: skip
            self.workers.append(worker)
            self.spawn(self._watch(worker), f"worker-{index}", fatal=True)
        logger.info("gateway: %d workers on port %d", len(self.workers), port)

    async def _watch(self, worker: asyncio.subprocess.Process) -> None:
        code = await worker.wait()
        if not self.stopping.is_set():
            raise WorkerExited(f"gateway worker {worker.pid} exited with code {code}")

    async def drain(self) -> None:
        """Every worker gets SIGTERM (uvicorn's graceful shutdown, then the hub's and clients')."""
        for worker in self.workers:
            if worker.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    worker.send_signal(signal.SIGTERM)

    async def close(self) -> None:
        for worker in self.workers:
            if worker.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    worker.kill()
                await worker.wait()
        if self._held is not None:
            self._held.close()
        if self._metrics_dir is not None:
            shutil.rmtree(self._metrics_dir, ignore_errors=True)
