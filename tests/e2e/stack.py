"""The whole system as real processes: projector, runner and gateway over one real Redis.

Each stack gets its own key prefix and state folder, so stacks can share the session's Redis
without flushing it under each other's feet.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from shared.keys import Keys
from tests.support.processes import ServiceProcess


class Stack:
    """Starts ``projector``, ``runner`` and ``gateway`` (in that order); stops them in reverse."""

    def __init__(self, redis_url: str, state_dir: Path, *, step_delay_s: float = 0.0, **extra: str) -> None:
        self.prefix = f"tt{uuid.uuid4().hex[:8]}:"
        self.keys = Keys(self.prefix)
        self.state_dir = state_dir
        self.log_dir = state_dir / "logs"
        self.env = {
            "REDIS_URL": redis_url,
            "TT_PREFIX": self.prefix,
            "TT_STATE_DIR": str(state_dir),
            "TT_STEP_DELAY_S": str(step_delay_s),
            "TT_LOG_FORMAT": "text",
            **extra,
        }
        self.projector = ServiceProcess("projector", self.env, log_dir=self.log_dir)
        self.env["TT_PROJECTOR_URL"] = self.projector.url
        self.runner = ServiceProcess("runner", self.env, log_dir=self.log_dir)
        self.gateway = ServiceProcess("gateway", self.env, log_dir=self.log_dir)

    @property
    def url(self) -> str:
        return self.gateway.url

    @property
    def api(self) -> str:
        return f"{self.gateway.url}/api/trading"

    def start(self) -> Stack:
        for service in (self.projector, self.runner, self.gateway):
            service.start(timeout_s=30.0)
        return self

    def stop(self) -> None:
        for service in (self.gateway, self.runner, self.projector):
            service.stop()

    def restart_gateway(self) -> None:
        """A new gateway process on the same port (what a browser reconnects to)."""
        self.gateway = ServiceProcess("gateway", self.env, port=self.gateway.port, log_dir=self.log_dir)
        deadline = time.monotonic() + 10.0
        while True:  # the old socket may linger for a moment after a SIGKILL
            try:
                self.gateway.start(timeout_s=30.0)
                return
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)

    def submit(
        self, symbol: str = "AAPL", analysts: tuple[str, ...] = ("market", "risk"), **extra: Any
    ) -> str:
        body = {"symbol": symbol, "analysts": list(analysts), "join": False, **extra}  # a new run each call
        response = httpx.post(f"{self.api}/runs", json=body, timeout=10.0)
        assert response.status_code == 202, response.text
        run_id: str = response.json()["runId"]
        return run_id

    def run(self, run_id: str) -> dict[str, Any]:
        response = httpx.get(f"{self.api}/runs/{run_id}", timeout=10.0)
        assert response.status_code == 200, response.text
        doc: dict[str, Any] = response.json()
        return doc

    def wait_status(self, run_id: str, statuses: set[str], timeout_s: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            state = self.run(run_id)
            if state["status"] in statuses:
                return state
            if time.monotonic() > deadline:
                raise TimeoutError(f"run {run_id} still {state['status']} after {timeout_s}s")
            time.sleep(0.1)

    def wait_progress(self, run_id: str, at_least: float, timeout_s: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            state = self.run(run_id)
            if state["progress"] >= at_least or state["terminal"]:
                return state
            if time.monotonic() > deadline:
                raise TimeoutError(f"run {run_id} at {state['progress']}% after {timeout_s}s")
            time.sleep(0.1)

    def logs(self) -> str:
        return "\n".join(f"--- {s.name}\n{s.logs()}" for s in (self.projector, self.runner, self.gateway))

    def __enter__(self) -> Stack:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
