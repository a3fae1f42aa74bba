"""`tickertape up` starts Redis and the three services as processes, keeps them running through
a `kill -9` of any one, stops on a crash loop, refuses a second stack, and leaves no orphan."""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from services.gateway.settings import auto_workers
from shared.redis_server import free_port


def children_of(pid: int) -> set[int]:
    """Every descendant process of ``pid`` (from /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def parent_of(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except OSError:
        return 0


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
    except OSError:
        return ""


def up_env(state_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of an `up` on free ports with its own Redis under ``state_dir``."""
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env.update(
        TT_STATE_DIR=str(state_dir),
        TT_GATEWAY_PORT=str(free_port()),
        TT_PROJECTOR_PORT=str(free_port()),
        TT_RUNNER_PORT=str(free_port()),
        TT_STEP_DELAY_S="0",
    )
    env.update(extra)
    return env


def run_up(env: dict[str, str], timeout_s: float = 20.0) -> subprocess.CompletedProcess[str]:
    """An `up` that is expected to refuse: its output and exit code."""
    command = [sys.executable, "-m", "services.cli", "up"]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout_s, check=False)


class Up:
    """A running ``tickertape up`` process and its output."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.port = int(env["TT_GATEWAY_PORT"])
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "up"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        with self.process.stdout:
            for line in self.process.stdout:
                self.lines.put(line.rstrip("\n"))

    def wait_for(self, text: str, timeout_s: float = 60.0) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                assert self.process.poll() is None or not self.lines.empty(), self.log()
                continue
            self.output.append(line)
            if text in line:
                return line
        raise TimeoutError(f"no {text!r} from tickertape up:\n{self.log()}")

    def log(self) -> str:
        while not self.lines.empty():
            self.output.append(self.lines.get())
        return "\n".join(self.output)

    def pid_of(self, name: str) -> int:
        """The pid of the child whose command line names ``name`` (a service or redis-server; the
        gateway's own, not one of its workers)."""
        pattern = "redis-server" if name == "redis" else f"services.{name}"
        direct = [pid for pid in children_of(self.process.pid) if parent_of(pid) == self.process.pid]
        return next(pid for pid in direct if pattern in cmdline(pid))

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/trading"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def test_up_serves_a_run_and_sigterm_stops_everything_with_no_orphan(up: Up, tmp_path: Path) -> None:
    processes = children_of(up.process.pid)
    assert len(processes) >= 4, up.log()  # redis-server, projector, runner, gateway
    run_id = httpx.post(f"{up.api}/runs", json={"symbol": "AAPL", "analysts": ["market"]}).json()["runId"]
    state = httpx.get(f"{up.api}/runs/{run_id}", params={"wait": 20}, timeout=30).json()
    assert state["status"] == "completed", up.log()
    assert f"http://localhost:{up.port}" in up.log()

    up.process.send_signal(signal.SIGTERM)

    assert up.process.wait(40) == 0, up.log()
    assert not [pid for pid in processes if alive(pid)], up.log()
    assert (tmp_path / "state" / "redis" / "redis.log").exists()


@pytest.mark.timeout(90)
@pytest.mark.parametrize("victim", ["gateway", "runner", "projector", "redis"])
def test_a_kill_9_of_any_child_is_survived_and_a_run_in_flight_completes(tmp_path: Path, victim: str) -> None:
    # A restarted runner resumes its own runs at once (same consumer name), so the runner keeps the
    # default 30 s lease: the run must end well before a lease would have let anyone take it over.
    lease = {} if victim == "runner" else {"TT_LEASE_S": "4"}
    up = Up(up_env(tmp_path / "state", TT_STEP_DELAY_S="0.4", **lease))
    try:
        up.wait_for("Tickertape is up")
        old = up.pid_of(victim)
        run_id = httpx.post(f"{up.api}/runs", json={"symbol": "AAPL", "analysts": ["market"]}).json()["runId"]
        time.sleep(1.2)  # in flight, and past Redis's once-a-second AOF fsync

        os.kill(old, signal.SIGKILL)
        killed = time.monotonic()

        back = up.wait_for(f"{victim} is back", timeout_s=30)
        assert str(old) not in back and up.pid_of(victim) != old, up.log()
        page_back = _page_answers(up.port, deadline=killed + 15)
        state = httpx.get(f"{up.api}/runs/{run_id}", params={"wait": 30}, timeout=40).json()
        assert state["status"] == "completed", (state, up.log())
        if victim == "runner":
            assert time.monotonic() - killed < 20, up.log()
            assert "left by our previous process" in up.log()
        assert page_back - killed < 15
        assert up.process.poll() is None, up.log()
    finally:
        up.stop()


def _page_answers(port: int, deadline: float) -> float:
    """When the web page and the runs list both answered 200 again."""
    while time.monotonic() < deadline:
        try:
            page = httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
            runs = httpx.get(f"http://127.0.0.1:{port}/api/trading/runs", timeout=2)
            if page.status_code == runs.status_code == 200:
                return time.monotonic()
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError("the page did not answer again")


@pytest.mark.timeout(90)
def test_a_crash_loop_stops_everything_naming_the_service_and_its_last_lines(tmp_path: Path) -> None:
    env = up_env(tmp_path / "state", TT_RESTART_BACKOFF_S="0.5", TT_CRASH_LOOP_RESTARTS="2")
    up = Up(env)
    try:
        up.wait_for("Tickertape is up")
        processes = children_of(up.process.pid)
        port = int(env["TT_PROJECTOR_PORT"])
        # `up` is frozen while the projector dies and its port is taken, so no restart can win
        # the port first: from then on every restart of the projector fails at once.
        projector = up.pid_of("projector")
        os.kill(up.process.pid, signal.SIGSTOP)
        try:
            os.kill(projector, signal.SIGKILL)
            held = _listening(port)
        finally:
            os.kill(up.process.pid, signal.SIGCONT)
        with held:
            assert up.process.wait(60) == 1, up.log()
        log = up.log()
        assert "projector is crash-looping (2 restarts within 60 s): stopping everything" in log
        last_lines = log.split("last lines of projector:")[1]
        assert "address already in use" in last_lines.lower(), log
        assert not [pid for pid in processes if alive(pid)], log
    finally:
        up.stop()


class _listening:
    """Holds ``port`` with a listening socket, retrying while a killed process still frees it."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # The port's closed health-check connections linger in TIME_WAIT; like uvicorn, reuse it.
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        deadline = time.monotonic() + 5
        while True:
            try:
                self.sock.bind(("127.0.0.1", port))
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        self.sock.listen()

    def __enter__(self) -> None:
        return None

    def __exit__(self, *_exc: object) -> None:
        self.sock.close()


def test_a_second_up_on_the_same_state_dir_refuses_at_once_and_the_first_keeps_running(up: Up) -> None:
    before = children_of(up.process.pid)
    gateway = up.pid_of("gateway")
    began = time.monotonic()

    second = run_up(up.env)

    assert time.monotonic() - began < 10
    assert second.returncode == 1, second.stdout
    expected = f"Tickertape is already running (pid {up.process.pid}, gateway on http://localhost:{up.port})"
    assert expected in second.stdout
    assert "started" not in second.stdout and "Traceback" not in second.stdout + second.stderr
    assert children_of(up.process.pid) == before
    assert httpx.get(f"http://127.0.0.1:{up.port}/healthz").json()["pid"] == gateway
    assert not [line for line in up.log().splitlines() if "exited" in line]


def test_a_port_in_use_is_named_with_its_variable_and_nothing_starts(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    env = up_env(state_dir)
    port = int(env["TT_PROJECTOR_PORT"])
    with _listening(port):
        result = run_up(env)
    assert result.returncode == 1, result.stdout
    assert f"port {port} is in use: set TT_PROJECTOR_PORT to move the projector" in result.stdout
    assert "started" not in result.stdout
    assert not state_dir.exists()  # not even the lock: no redis-server, no files
    assert not [
        pid for pid in map(int, filter(str.isdigit, os.listdir("/proc"))) if str(state_dir) in cmdline(pid)
    ]


def test_a_killed_launcher_takes_its_services_and_redis_down_with_it(up: Up) -> None:
    processes = {pid: cmdline(pid) for pid in children_of(up.process.pid)}
    services = [pid for pid, cmd in processes.items() if "services." in cmd or "redis-server" in cmd]
    workers = [pid for pid in services if "services.gateway" in processes[pid]]
    # redis, projector, runner and the gateway, whose workers (one per CPU) are its own children
    assert len(services) - len(workers) == 3
    assert len(workers) == 1 + (auto_workers() if auto_workers() > 1 else 0)

    up.process.kill()  # SIGKILL: no handler runs; the parent-death signal does the work
    up.process.wait()

    deadline = time.monotonic() + 30
    while any(alive(pid) for pid in services) and time.monotonic() < deadline:
        time.sleep(0.1)
    leftovers = [pid for pid in services if alive(pid)]
    for pid in leftovers:  # a failing run of this test leaves no orphan behind either
        os.kill(pid, signal.SIGKILL)
    assert not leftovers
