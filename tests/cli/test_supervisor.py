"""The restart policy (pure clock arithmetic) and the state-folder lock, without processes."""

from __future__ import annotations

import http.server
import io
import json
import os
import socket
import threading
import time
from pathlib import Path

import pytest

from services.cli.preflight import AlreadyRunning, StateLock, busy_ports
from services.cli.processes import Console, ServiceProcess, ServiceSpec
from services.cli.supervisor import RestartPolicy
from shared.redis_server import free_port


def test_backoff_doubles_from_the_first_delay_up_to_the_cap() -> None:
    policy = RestartPolicy(first_s=0.5, max_s=3.0, limit=100, window_s=60)
    assert [policy.next_delay(float(t)) for t in range(6)] == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]


def test_a_child_that_settled_starts_over_at_the_first_delay() -> None:
    policy = RestartPolicy(first_s=0.5, max_s=30, limit=100, window_s=60)
    policy.next_delay(0)
    policy.next_delay(1)
    policy.settled()
    assert policy.next_delay(2) == 0.5


def test_more_restarts_than_the_limit_within_the_window_is_a_crash_loop() -> None:
    policy = RestartPolicy(first_s=0.5, max_s=30, limit=5, window_s=60)
    assert all(policy.next_delay(t) is not None for t in (0, 1, 2, 3, 4))
    assert policy.next_delay(5) is None


def test_restarts_older_than_the_window_no_longer_count() -> None:
    policy = RestartPolicy(first_s=0.5, max_s=30, limit=2, window_s=60)
    assert policy.next_delay(0) is not None
    assert policy.next_delay(30) is not None
    assert policy.next_delay(61) is not None  # the one at 0 left the window
    assert policy.next_delay(70) is None


def test_the_state_lock_is_exclusive_and_names_its_holder(tmp_path: Path) -> None:
    StateLock(tmp_path / "state").check()
    assert not (tmp_path / "state").exists()  # checking a free folder creates nothing
    first = StateLock(tmp_path)
    first.acquire({"gateway_port": 8123})
    try:
        refusal = r"already running \(pid \d+, gateway on http://localhost:8123\)"
        with pytest.raises(AlreadyRunning, match=refusal):
            StateLock(tmp_path).check()
        with pytest.raises(AlreadyRunning, match=refusal):
            StateLock(tmp_path).acquire({"gateway_port": 9999})
        assert json.loads((tmp_path / "up.lock").read_text())["gateway_port"] == 8123  # untouched
    finally:
        first.release()
    again = StateLock(tmp_path)
    again.acquire({"gateway_port": 9999})
    again.release()


def test_a_busy_port_is_reported_with_the_variable_that_moves_it() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert busy_ports({"gateway": (port, "TT_GATEWAY_PORT"), "runner": (0, "TT_RUNNER_PORT")}) == [
            f"port {port} is in use: set TT_GATEWAY_PORT to move the gateway"
        ]


class _Impostor(http.server.BaseHTTPRequestHandler):
    """Answers /healthz 200 with whatever pid the test sets, as a leftover process would."""

    pid = 0

    def do_GET(self) -> None:
        body = json.dumps({"status": "ok", "pid": type(self).pid}).encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        return None


def test_a_child_is_healthy_only_when_its_own_pid_answers_on_its_port() -> None:
    """A gateway serving elsewhere while another process answers on the port up checks."""
    impostor = http.server.HTTPServer(("127.0.0.1", 0), _Impostor)
    threading.Thread(target=impostor.serve_forever, daemon=True).start()
    port = impostor.server_address[1]
    env = {**os.environ, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    env["TT_GATEWAY_PORT"] = str(free_port())
    child = ServiceProcess(ServiceSpec("gateway", "gateway", port), env, Console(io.StringIO()))
    child.start()
    try:
        _Impostor.pid = os.getpid()
        time.sleep(1.0)
        assert child.exit_code() is None
        assert not child.healthy()
        _Impostor.pid = child.pid or 0
        assert child.healthy()
    finally:
        child.terminate()
        child.wait_or_kill(time.monotonic() + 10)
        impostor.shutdown()
        impostor.server_close()
