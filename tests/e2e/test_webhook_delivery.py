"""Webhooks through the whole system: real gateway, runner and projector processes, and a real
receiver process that verifies every delivery with ``standardwebhooks``, killed for a while and
brought back on the same port. Every terminal event reaches the run's own webhook and the
operator's endpoint (``TT_WEBHOOK_ENDPOINTS``) at least once, signed, under a stable webhook-id."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.redis_server import free_port
from shared.webhooks import new_secret
from tests.e2e.stack import Stack
from tests.support.processes import ROOT

KINDS = {"completed": "run.completed", "cancelled": "run.cancelled", "failed": "run.failed"}
KINDS["timeout"] = "run.timed_out"


class ReceiverProcess:
    """``python -m tests.support.webhook_receiver`` on a fixed port, started and killed at will."""

    def __init__(self, port: int, folder: Path) -> None:
        self.port, self.secrets, self.log = port, folder / "secrets.json", folder / "received.jsonl"
        self.secrets.write_text("{}")
        self.process: subprocess.Popen[str] | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def know(self, path: str, secret: str) -> None:
        """Tell the receiver a path's secret (written whole, then renamed: never read half)."""
        known = json.loads(self.secrets.read_text()) | {path: secret}
        staged = self.secrets.with_suffix(".tmp")
        staged.write_text(json.dumps(known))
        staged.replace(self.secrets)

    def start(self, *flags: str) -> None:
        command = [sys.executable, "-m", "tests.support.webhook_receiver", str(self.port)]
        command += [str(self.secrets), str(self.log), *flags]
        deadline = time.monotonic() + 10
        while True:  # the killed process's socket may linger for a moment
            self.process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
            assert self.process.stdout is not None
            if self.process.stdout.readline().strip() == "listening":
                return
            self.kill()
            assert time.monotonic() < deadline, "the receiver could not bind its port again"
            time.sleep(0.2)

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            if self.process.stdout is not None:
                self.process.stdout.close()

    def lines(self) -> list[dict[str, Any]]:
        text = self.log.read_text() if self.log.exists() else ""
        return [json.loads(line) for line in text.splitlines()]


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[ReceiverProcess]:
    rec = ReceiverProcess(free_port(), tmp_path)
    try:
        yield rec
    finally:
        rec.kill()


def until(what: str, check: Callable[[], bool], timeout_s: float = 45.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def deliveries(stack: Stack, run_id: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = stack.run(run_id)["deliveries"]
    return found


@pytest.mark.timeout(120)
def test_a_receiver_down_for_a_while_gets_every_end_signed_once_it_is_back(
    redis_url: str, tmp_path: Path, receiver: ReceiverProcess
) -> None:
    operator_secret = new_secret()
    receiver.know("/operator", operator_secret)
    operator = [{"url": receiver.url("/operator"), "name": "ops", "secret": operator_secret}]
    env = {
        "TT_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",
        "TT_WEBHOOK_ENDPOINTS": json.dumps({"local": operator}),
        "TT_WEBHOOK_INTERVAL_S": "0.1",
        "TT_WEBHOOK_BACKOFF_S": "0.2",
        "TT_WEBHOOK_MAX_BACKOFF_S": "1",
        "TT_PIPELINES": "hang=tests.support.hang_pipeline:pipeline",
        "TT_STEP_TIMEOUT_S": "3",
        "TT_CSV_DIR": str(ROOT / "tests" / "fixtures" / "market"),
    }
    with Stack(redis_url, tmp_path / "stack", **env) as stack:

        def submit(label: str, **body: Any) -> str:
            """A run with its own webhook (a generated secret, told to the receiver)."""
            webhook = {"url": receiver.url(f"/own/{label}")}
            answer = httpx.post(f"{stack.api}/runs", json={**body, "join": False, "webhook": webhook}).json()
            receiver.know(f"/own/{label}", answer["webhookSecret"])
            run_id: str = answer["runId"]
            return run_id

        receiver.start()
        up = submit("up", symbol="AAPL", analysts=["market"])
        until("the first run's deliveries", lambda: _all_delivered(stack, [up]))

        receiver.kill()
        runs = {
            "completed": submit("done", symbol="MSFT", analysts=["market"]),
            "failed": submit("failed", symbol="NOSUCH", analysts=["market"], dataProvider="csv"),
            "cancelled": submit("cancelled", symbol="AAPL", analysts=["market"], pipeline="hang"),
            "timeout": submit("timeout", symbol="IBM", analysts=["market"], pipeline="hang"),
        }
        stack.wait_status(runs["cancelled"], {"running"})
        assert httpx.delete(f"{stack.api}/runs/{runs['cancelled']}").status_code == 202
        for status, run_id in runs.items():
            assert stack.wait_status(run_id, set(KINDS), timeout_s=45)["status"] == status, stack.logs()
        until("failed attempts while the receiver is down", lambda: _all_tried(stack, [*runs.values()]))

        receiver.start("--refuse-first")  # back on the same port, refusing each id's first request
        until("every delivery", lambda: _all_delivered(stack, [up, *runs.values()]))

        lines = receiver.lines()
        shown = {d["webhookId"]: d for run_id in [up, *runs.values()] for d in deliveries(stack, run_id)}
    assert not [line for line in lines if line["verified"] is False], lines  # no bad signature
    assert all(line["verified"] for line in lines if line["code"] == 200), lines
    for status, run_id in [("completed", up), *runs.items()]:
        for webhook_id in (f"msg_{run_id}", f"msg_{run_id}_ops"):
            got = [line for line in lines if line["id"] == webhook_id]
            assert [line["code"] for line in got][-1] == 200, (webhook_id, lines)  # delivered, never lost
            checked = {(line["type"], line["runId"]) for line in got if line["verified"]}
            assert checked == {(KINDS[status], run_id)}
            if run_id != up:  # tried while down, refused once after: the same id on every attempt
                assert [line["code"] for line in got] == [503, 200]
                assert shown[webhook_id]["attempts"] >= 3 and shown[webhook_id]["status"] == "delivered"
    assert shown[f"msg_{up}_ops"]["endpoint"] == "ops" and shown[f"msg_{up}"]["endpoint"] is None


def _all_delivered(stack: Stack, run_ids: list[str]) -> bool:
    found = [d for run_id in run_ids for d in deliveries(stack, run_id)]
    return len(found) == 2 * len(run_ids) and all(d["status"] == "delivered" for d in found)


def _all_tried(stack: Stack, run_ids: list[str]) -> bool:
    found = [d for run_id in run_ids for d in deliveries(stack, run_id)]
    return len(found) == 2 * len(run_ids) and all(d["status"] == "retrying" for d in found)
