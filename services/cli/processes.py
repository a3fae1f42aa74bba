"""The processes `tickertape up` runs: a service (``python -m services.<module>``) or redis-server.

Both start without blocking on health, report their exit, prove their identity when asked whether
they are healthy (what answers on the port must be the pid started here, not a leftover or a
neighbour's process), and keep their last log lines for a crash report.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import IO, Protocol

import httpx
import redis

from shared.lifecycle import parent_death_hook
from shared.redis_server import RedisLaunchError, RedisServer

COLOURS = {"redis": "31", "projector": "35", "runner": "33", "gateway": "36", "up": "32"}
LAST_LINES = 20


class Console:
    """Writes lines prefixed with the name of the process they came from, one at a time."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stdout
        self.colour = self.stream.isatty() and not os.environ.get("NO_COLOR")
        self._lock = threading.Lock()

    def line(self, name: str, text: str) -> None:
        prefix = f"{name:<9}|"
        if self.colour:
            prefix = f"\x1b[{COLOURS.get(name.split('-')[0], '0')}m{prefix}\x1b[0m"
        with self._lock:
            self.stream.write(f"{prefix} {text}\n")
            self.stream.flush()

    def say(self, text: str) -> None:
        self.line("up", text)


class Process(Protocol):
    """What the supervisor needs of a child."""

    name: str

    @property
    def pid(self) -> int | None: ...
    def start(self) -> None: ...
    def exit_code(self) -> int | None: ...
    def healthy(self) -> bool: ...
    def terminate(self) -> None: ...
    def wait_or_kill(self, deadline: float) -> None: ...
    def last_lines(self) -> list[str]: ...


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """One service `up` runs: its console name, ``services.<module>``, /healthz port, extra env."""

    name: str
    module: str
    port: int
    env: Mapping[str, str] = field(default_factory=dict)


class ServiceProcess:
    """A service process and the thread that copies its output to the console."""

    def __init__(self, spec: ServiceSpec, env: Mapping[str, str], console: Console) -> None:
        self.name = spec.name
        self.spec = spec
        self.env = {**env, **spec.env}
        self.console = console
        self.process: subprocess.Popen[bytes] | None = None
        self.lines: deque[str] = deque(maxlen=LAST_LINES)
        self._pumps: list[threading.Thread] = []
        self._pre_exec = parent_death_hook()

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", f"services.{self.spec.module}"],
            env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            process_group=0, preexec_fn=self._pre_exec,
        )  # fmt: skip
        pump = threading.Thread(target=self._copy, args=(self.process,), daemon=True)
        pump.start()
        self._pumps = [p for p in self._pumps if p.is_alive()] + [pump]

    def _copy(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        with process.stdout:
            for raw in iter(process.stdout.readline, b""):
                text = raw.decode(errors="replace").rstrip()
                self.lines.append(text)
                self.console.line(self.name, text)

    def exit_code(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def healthy(self) -> bool:
        """/healthz answers 200 with this process's pid (no health port: alive is enough)."""
        if self.exit_code() is not None or self.process is None:
            return False
        if self.spec.port == 0:
            return True
        try:
            answer = httpx.get(f"http://127.0.0.1:{self.spec.port}/healthz", timeout=1.0)
            return answer.status_code == 200 and answer.json().get("pid") == self.process.pid
        except (httpx.HTTPError, ValueError, AttributeError):
            return False

    def terminate(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def wait_or_kill(self, deadline: float) -> None:
        if self.process is not None:
            try:
                self.process.wait(max(deadline - time.monotonic(), 0.0))
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for pump in self._pumps:
            pump.join(2.0)

    def last_lines(self) -> list[str]:
        return list(self.lines)


class RedisProcess:
    """The redis-server `up` owns: always the same port and data folder, so a restart keeps both
    the URL the services hold and the data (AOF) they wrote."""

    name = "redis"

    def __init__(self, server: RedisServer) -> None:
        self.server = server
        self._failed: int | None = None
        self._error = ""

    @property
    def pid(self) -> int | None:
        return None if self.server.process is None else self.server.process.pid

    def start(self) -> None:
        self._failed, self._error = None, ""
        try:
            self.server.start()
        except RedisLaunchError as exc:
            # Reported as an exit: the restart policy decides what follows.
            self._failed, self._error = 1, str(exc)

    def exit_code(self) -> int | None:
        if self.server.process is None:
            return self._failed
        return self.server.process.poll()

    def healthy(self) -> bool:
        """PING answers and INFO names the pid started here."""
        if self.exit_code() is not None:
            return False
        client = redis.Redis(port=self.server.port, socket_timeout=1.0)
        try:
            return int(client.info("server")["process_id"]) == self.pid
        except (redis.RedisError, KeyError, ValueError):
            return False
        finally:
            client.close()

    def terminate(self) -> None:
        process = self.server.process
        if process is not None and process.poll() is None:
            process.terminate()  # SIGTERM: redis-server flushes its AOF and exits cleanly

    def wait_or_kill(self, deadline: float) -> None:
        self.server.stop(max(deadline - time.monotonic(), 1.0))

    def last_lines(self) -> list[str]:
        lines: list[str] = []
        with contextlib.suppress(OSError):
            lines = (self.server.data_dir / "redis.log").read_text(errors="replace").splitlines()
        return lines[-LAST_LINES:] + ([self._error] if self._error else [])
