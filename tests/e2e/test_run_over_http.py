"""Issue 2's acceptance: a run submitted over HTTP to the real processes completes, and SSE streams it."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from redis import Redis

from shared.catalog import plan_steps
from tests.e2e.stack import Stack

ANALYSTS = ("invest", "risk", "sentiment")


def read_sse(url: str, timeout_s: float = 60.0) -> list[tuple[str, str, dict[str, Any]]]:
    """(id, event, data) of every message until the server closes the stream (like `curl -N`)."""
    messages: list[tuple[str, str, dict[str, Any]]] = []
    fields: dict[str, str] = {}
    with httpx.stream("GET", url, timeout=httpx.Timeout(10.0, read=timeout_s)) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith(":"):
                continue
            if line:
                name, _, value = line.partition(": ")
                fields[name] = value
                continue
            if "data" in fields:
                messages.append((fields.get("id", ""), fields.get("event", ""), json.loads(fields["data"])))
            fields = {}
    return messages


def run_stream_ids(redis_url: str, key: str) -> list[str]:
    with Redis.from_url(redis_url, decode_responses=True) as redis:
        return [entry_id for entry_id, _ in redis.xrange(key)]


def test_a_run_submitted_over_http_completes_with_a_decision_and_every_report(stack: Stack) -> None:
    run_id = stack.submit("AAPL", ANALYSTS)

    state = stack.wait_status(run_id, {"completed", "failed", "timeout", "cancelled"})

    assert state["status"] == "completed", stack.logs()
    result = state["result"]
    assert result["decision"] in {"BUY", "SELL", "HOLD"}
    assert {report["analyst"] for report in result["reports"]} == set(ANALYSTS)
    assert all(report["report"].strip() for report in result["reports"])
    assert [step["status"] for step in state["steps"]] == ["completed"] * len(plan_steps(ANALYSTS))


def test_sse_streams_every_step_of_a_run_in_order_and_closes(stack: Stack, redis_url: str) -> None:
    run_id = stack.submit("MSFT", ANALYSTS)

    messages = read_sse(f"{stack.api}/runs/{run_id}/events")

    events = [(kind, data) for _id, kind, data in messages if kind != "end"]
    ids = [event_id for event_id, kind, _ in messages if kind != "end"]
    assert ids == run_stream_ids(redis_url, stack.keys.run(run_id))
    started = [data["event"]["step"] for kind, data in events if kind == "StepStarted"]
    completed = [data["event"]["step"] for kind, data in events if kind == "StepCompleted"]
    assert started == completed == list(plan_steps(ANALYSTS))
    assert events[-1][0] == "RunCompleted"
    assert events[-1][1]["delta"]["status"] == "completed"  # the final state: all before it, merged
    assert messages[-1][1] == "end"


BAD = [
    ({"symbol": "", "analysts": ["market"]}, "symbol"),
    ({"symbol": "AAPL", "analysts": ["astrology"]}, "analysts"),
]


@pytest.mark.parametrize(("body", "field"), BAD)
def test_bad_request_gets_a_problem_naming_the_field(stack: Stack, body: dict[str, Any], field: str) -> None:
    response = httpx.post(f"{stack.api}/runs", json=body, timeout=10.0)

    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["field"].startswith(field)
