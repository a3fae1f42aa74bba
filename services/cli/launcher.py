"""`tickertape up`: Redis and the services as separate processes, supervised, stopped together.

Before anything starts, `up` takes the state folder's lock (one stack per folder) and checks its
ports. Each service runs as ``python -m services.<module>`` in a process group of its own (so a
terminal's Ctrl-C reaches only the launcher, which then stops them in order) and with a
parent-death signal (so even a launcher killed with SIGKILL leaves no orphan behind). While up,
the supervisor restarts whatever dies (see `services.cli.supervisor`).
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Mapping

from services.cli.preflight import AlreadyRunning, StateLock, busy_ports
from services.cli.processes import (
    Console,
    Process,
    RedisProcess,
    ServiceProcess,
    ServiceSpec,
)
from services.cli.settings import LaunchSettings
from services.cli.supervisor import CrashLoop, Supervisor
from shared.config import DEFAULT_REDIS_URL, Env, sentinel_from_env
from shared.lifecycle import parent_death_hook
from shared.redis_server import RedisLaunchError, RedisServer


class LaunchError(Exception):
    """A service could not be started; the message says which and why."""


def service_specs(settings: LaunchSettings) -> list[ServiceSpec]:
    """The services `up` runs, in start order (stopped in reverse). One line per child."""
    return [
        ServiceSpec("projector", "projector", settings.projector_port),
        ServiceSpec("runner", "runner", settings.runner_port, {"TT_RUNNER_ID": runner_id(settings)}),
        ServiceSpec("gateway", "gateway", settings.gateway_port),
    ]


def runner_id(settings: LaunchSettings) -> str:
    """One consumer name per stack, kept across restarts: a restarted runner resumes its own runs
    at once (it claims what its previous process left pending) instead of after a lease."""
    stack = hashlib.sha1(str(settings.state_dir.resolve()).encode()).hexdigest()[:8]
    return os.environ.get("TT_RUNNER_ID") or f"{socket.gethostname()}-up-{stack}"


def port_variables(settings: LaunchSettings) -> dict[str, tuple[int, str]]:
    """Each port `up` binds and the variable that moves it."""
    return {
        "gateway": (settings.gateway_port, "TT_GATEWAY_PORT"),
        "projector": (settings.projector_port, "TT_PROJECTOR_PORT"),
        "runner": (settings.runner_port, "TT_RUNNER_PORT"),
    }


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
    """Checks, starts Redis (unless REDIS_URL is set) and the services, supervises, stops."""

    def __init__(self, settings: LaunchSettings, console: Console | None = None) -> None:
        self.settings = settings
        self.console = console or Console()
        self.lock = StateLock(settings.state_dir)
        self.redis: RedisProcess | None = None
        self.children: list[Process] = []
        self.stopping = threading.Event()
        self.supervisor = Supervisor(settings, self.console, self.stopping)
        self.reason = ""

    def run(self) -> int:
        """Check, start everything, supervise until a signal or a crash loop, stop; the exit code."""
        if not self._preflight():
            return 1
        self._install_signals()
        try:
            redis_url = self._start_all()
            api_url = f"http://127.0.0.1:{self.settings.gateway_port}"
            self.lock.add(api_url=api_url, redis_url=redis_url)  # where the other commands look
            self.console.say(f"Tickertape is up: http://localhost:{self.settings.gateway_port}")
            self.console.say("Ctrl-C stops everything")
            return self._supervise()
        except (LaunchError, RedisLaunchError) as exc:
            self.console.say(f"error: {exc}")
            return 1
        finally:
            self.stop()
            self.lock.release()

    def _preflight(self) -> bool:
        """Check the state folder is free, then the ports, then take the folder: a refusal has
        started, created and changed nothing."""
        ports = port_variables(self.settings)
        try:
            self.lock.check()
            busy = busy_ports(ports)
            for message in busy:
                self.console.say(message)
            if not busy:
                self.lock.acquire({f"{name}_port": port for name, (port, _) in ports.items()})
        except AlreadyRunning as exc:
            self.console.say(str(exc))
            return False
        return not busy

    def _install_signals(self) -> None:
        def handler(signum: int, _frame: object) -> None:
            self.reason = signal.Signals(signum).name
            self.stopping.set()

        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, handler)

    def _start_all(self) -> str:
        """Start Redis (unless given) and the services; the Redis URL they use."""
        redis_url = self._redis_url()
        env = service_env(self.settings, redis_url, os.environ)
        for spec in service_specs(self.settings):
            self._interrupted()
            self._start(ServiceProcess(spec, env, self.console))
        return redis_url

    def _redis_url(self) -> str:
        """REDIS_URL when set (nothing is started), else the redis-server this launcher owns."""
        sentinel = sentinel_from_env(Env())  # the children inherit TT_REDIS_SENTINEL*
        if sentinel is not None:
            self.console.line("redis", f"using {sentinel}: no Redis of our own")
            return self.settings.redis_url or DEFAULT_REDIS_URL
        if self.settings.redis_url:
            self.console.line("redis", f"using REDIS_URL {self.settings.redis_url}")
            return self.settings.redis_url
        data_dir = self.settings.state_dir / "redis"
        server = RedisServer(
            data_dir, appendonly=True, appendfsync="everysec", own_session=True, pre_exec=parent_death_hook()
        )
        self.redis = RedisProcess(server)
        self._start(self.redis)
        self.console.line("redis", f"redis-server {server.version()} on {server.url} ({data_dir})")
        return server.url

    def _start(self, child: Process) -> None:
        if child is not self.redis:
            self.children.append(child)
        child.start()
        self.console.say(f"started {child.name} (pid {child.pid})")
        deadline = time.monotonic() + self.settings.health_timeout_s
        while time.monotonic() < deadline:
            self._interrupted()
            code = child.exit_code()
            if code is not None:
                raise LaunchError(self._failure(child, f"exited with code {code} while starting"))
            if child.healthy():
                return
            time.sleep(0.1)
        raise LaunchError(self._failure(child, "did not answer its health check in time"))

    @staticmethod
    def _failure(child: Process, what: str) -> str:
        return "\n".join([f"{child.name} {what}; its last lines:", *child.last_lines()])

    def _interrupted(self) -> None:
        if self.stopping.is_set():
            raise LaunchError(f"interrupted by {self.reason} while starting")

    def _supervise(self) -> int:
        self.supervisor.adopt([*([self.redis] if self.redis else []), *self.children])
        try:
            self.supervisor.run()
        except CrashLoop as exc:
            self.console.say(str(exc))
            self.console.say(f"last lines of {exc.slot.process.name}:")
            for line in exc.slot.process.last_lines():
                self.console.say(f"  {line}")
            return 1
        self.console.say(f"{self.reason}: stopping")
        return 0

    def stop(self) -> None:
        """SIGTERM to every service (newest first), SIGKILL after the grace period, Redis last."""
        children, self.children = self.children, []
        for child in reversed(children):
            child.terminate()
        deadline = time.monotonic() + self.settings.grace_s
        for child in reversed(children):
            child.wait_or_kill(deadline)
            self.console.say(f"{child.name} stopped (code {child.exit_code()})")
        redis, self.redis = self.redis, None
        if redis is not None:
            redis.terminate()
            redis.wait_or_kill(time.monotonic() + 10.0)
            self.console.line("redis", "stopped")


def up(settings_factory: Callable[[], LaunchSettings] = LaunchSettings.from_env) -> int:
    """The `up` command."""
    return Launcher(settings_factory()).run()
