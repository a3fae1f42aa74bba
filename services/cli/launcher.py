"""`tickertape up`: Redis and the three services as separate processes, stopped together.

Each service runs as ``python -m services.<name>`` in a process group of its own (so a terminal's
Ctrl-C reaches only the launcher, which then stops them in order) and with a parent-death signal
(so even a launcher killed with SIGKILL leaves no orphan service behind).
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import IO

import httpx

from services.cli.settings import LaunchSettings
from shared.config import DEFAULT_REDIS_URL, Env, sentinel_from_env
from shared.redis_server import RedisLaunchError, RedisServer

COLOURS = {"redis": "31", "projector": "35", "runner": "33", "gateway": "36", "up": "32"}
PR_SET_PDEATHSIG = 1


class LaunchError(Exception):
    """A service could not be started or stopped running; the message says which and why."""


def parent_death_hook() -> Callable[[], None] | None:
    """A pre-exec hook that makes the child get SIGTERM when the launcher dies, however it dies.

    The libc function is looked up here, in the parent: the hook itself runs between fork and
    exec, where only already-resolved calls are safe.
    """
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None  # not Linux: the launcher's signal handlers are the only guard
    sigterm = int(signal.SIGTERM)
    return lambda: prctl(PR_SET_PDEATHSIG, sigterm, 0, 0, 0)


class Console:
    """Writes lines prefixed with the name of the process they came from, one at a time."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stdout
        self.colour = self.stream.isatty() and not os.environ.get("NO_COLOR")
        self._lock = threading.Lock()

    def line(self, name: str, text: str) -> None:
        prefix = f"{name:<9}|"
        if self.colour:
            prefix = f"\x1b[{COLOURS.get(name, '0')}m{prefix}\x1b[0m"
        with self._lock:
            self.stream.write(f"{prefix} {text}\n")
            self.stream.flush()

    def say(self, text: str) -> None:
        self.line("up", text)


@dataclass
class Child:
    """One service process and the thread that copies its output to the console."""

    name: str
    port: int
    process: subprocess.Popen[bytes]
    pump: threading.Thread = field(init=False)

    def start_pump(self, console: Console) -> None:
        self.pump = threading.Thread(target=self._copy, args=(console,), daemon=True)
        self.pump.start()

    def _copy(self, console: Console) -> None:
        assert self.process.stdout is not None
        for raw in iter(self.process.stdout.readline, b""):
            console.line(self.name, raw.decode(errors="replace").rstrip())

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def healthy(self) -> bool:
        if self.port == 0:
            return True
        try:
            return httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    def terminate(self) -> None:
        if self.alive:
            self.process.send_signal(signal.SIGTERM)

    def wait_or_kill(self, deadline: float) -> None:
        try:
            self.process.wait(max(deadline - time.monotonic(), 0.0))
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.pump.join(2.0)


def service_env(settings: LaunchSettings, redis_url: str, base: Mapping[str, str]) -> dict[str, str]:
    """The environment every service gets: the Redis URL, ports, text logs and demo pacing."""
    env = dict(base)
    env.update(
        REDIS_URL=redis_url,
        TT_STATE_DIR=str(settings.state_dir),
        TT_GATEWAY_PORT=str(settings.gateway_port),
        TT_PROJECTOR_PORT=str(settings.projector_port),
        TT_RUNNER_PORT=str(settings.runner_port),
        TT_PROJECTOR_URL=f"http://127.0.0.1:{settings.projector_port}",
        TT_LOG_FORMAT=settings.log_format,
        PYTHONUNBUFFERED="1",
    )
    env.setdefault("TT_STEP_DELAY_S", settings.step_delay_s)
    return env


class Launcher:
    """Starts Redis (unless REDIS_URL is set) and the services; stops everything on a signal."""

    def __init__(self, settings: LaunchSettings, console: Console | None = None) -> None:
        self.settings = settings
        self.console = console or Console()
        self.redis: RedisServer | None = None
        self.children: list[Child] = []
        self.stopping = threading.Event()
        self.reason = ""
        self._pre_exec = parent_death_hook()

    def run(self) -> int:
        """Start everything, wait for a signal or a dying child, stop everything; the exit code."""
        self._install_signals()
        try:
            self._start_all()
            self.console.say(f"Tickertape is up: http://localhost:{self.settings.gateway_port}")
            self.console.say("Ctrl-C stops everything")
            return self._supervise()
        except (LaunchError, RedisLaunchError) as exc:
            self.console.say(f"error: {exc}")
            return 1
        finally:
            self.stop()

    def _install_signals(self) -> None:
        def handler(signum: int, _frame: object) -> None:
            self.reason = signal.Signals(signum).name
            self.stopping.set()

        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, handler)

    def _start_all(self) -> None:
        redis_url = self._redis_url()
        env = service_env(self.settings, redis_url, os.environ)
        ports = {
            "projector": self.settings.projector_port,
            "runner": self.settings.runner_port,
            "gateway": self.settings.gateway_port,
        }
        for name, port in ports.items():
            self._interrupted()
            child = self._spawn(name, port, env)
            self._wait_healthy(child)

    def _redis_url(self) -> str:
        sentinel = sentinel_from_env(Env())  # the children inherit TT_REDIS_SENTINEL*
        if sentinel is not None:
            self.console.line("redis", f"using {sentinel}: no Redis of our own")
            return self.settings.redis_url or DEFAULT_REDIS_URL
        if self.settings.redis_url:
            self.console.line("redis", f"using REDIS_URL {self.settings.redis_url}")
            return self.settings.redis_url
        data_dir = self.settings.state_dir / "redis"
        self.redis = RedisServer(data_dir, appendonly=True, appendfsync="everysec", own_session=True)
        self.redis.start()
        self.console.line("redis", f"redis-server {self.redis.version()} on {self.redis.url} ({data_dir})")
        return self.redis.url

    def _spawn(self, name: str, port: int, env: Mapping[str, str]) -> Child:
        process = subprocess.Popen(
            [sys.executable, "-m", f"services.{name}"],
            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            process_group=0, preexec_fn=self._pre_exec,
        )  # fmt: skip
        child = Child(name, port, process)
        child.start_pump(self.console)
        self.children.append(child)
        self.console.say(f"started {name} (pid {process.pid})")
        return child

    def _wait_healthy(self, child: Child) -> None:
        deadline = time.monotonic() + self.settings.health_timeout_s
        while time.monotonic() < deadline:
            self._interrupted()
            if not child.alive:
                raise LaunchError(f"{child.name} exited with code {child.process.returncode} while starting")
            if child.healthy():
                return
            time.sleep(0.1)
        raise LaunchError(f"{child.name} did not answer /healthz on port {child.port} in time")

    def _interrupted(self) -> None:
        if self.stopping.is_set():
            raise LaunchError(f"interrupted by {self.reason} while starting")

    def _supervise(self) -> int:
        while not self.stopping.wait(0.2):
            for child in self.children:
                if not child.alive:
                    code = child.process.returncode
                    self.console.say(f"{child.name} exited unexpectedly (code {code}): stopping everything")
                    return 1
        self.console.say(f"{self.reason}: stopping")
        return 0

    def stop(self) -> None:
        """SIGTERM to every service (newest first), SIGKILL after the grace period, then Redis."""
        children, self.children = self.children, []
        for child in reversed(children):
            child.terminate()
        deadline = time.monotonic() + self.settings.grace_s
        for child in reversed(children):
            child.wait_or_kill(deadline)
            self.console.say(f"{child.name} stopped (code {child.process.returncode})")
        if self.redis is not None:
            self.redis.stop()
            self.redis = None
            self.console.line("redis", "stopped")


def up(settings_factory: Callable[[], LaunchSettings] = LaunchSettings.from_env) -> int:
    """The `up` command."""
    return Launcher(settings_factory()).run()
