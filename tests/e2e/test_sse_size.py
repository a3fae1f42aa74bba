"""A whole run's SSE stream stays small: the full state on connect, deltas after it (the end's too)."""

from __future__ import annotations

import json
from typing import Any

import httpx

from services.gateway.schemas import OWNER_ONLY
from shared.statedelta import merge
from tests.e2e.stack import Stack

STREAM_BUDGET_BYTES = 40_000
ALL_ANALYSTS = ("market", "fundamentals", "news", "sentiment", "risk", "invest")
"""The longest offline run: every analyst, so the most steps and the largest result."""


def raw_stream(url: str) -> bytes:
    """Every byte of the SSE body until the server closes it (after the run's end)."""
    with httpx.stream("GET", url, timeout=httpx.Timeout(10.0, read=60.0)) as response:
        assert response.status_code == 200
        return b"".join(response.iter_bytes())


def messages(body: bytes) -> list[tuple[str, str, dict[str, Any]]]:
    out = []
    for block in body.decode().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.split("\n") if line and not line.startswith(":"))
        if "data" in fields:
            out.append((fields.get("id", ""), fields.get("event", "message"), json.loads(fields["data"])))
    return out


def test_a_six_analyst_offline_run_streams_in_at_most_40_kb_and_its_deltas_rebuild_the_state(
    stack: Stack,
) -> None:
    run_id = stack.submit("AAPL", ALL_ANALYSTS)
    body = raw_stream(f"{stack.api}/runs/{run_id}/events")
    received = messages(body)
    assert received[-1][1] == "end" and received[-2][1] == "RunCompleted"
    assert len(body) <= STREAM_BUDGET_BYTES, len(body)
    state: dict[str, Any] = {}
    for event_id, kind, data in received[:-1]:
        state = data["state"] if "state" in data else merge(state, data["delta"], event_id)
        assert state["lastEventId"] == event_id and kind == data["event"]["type"]
        assert set(data["event"]) <= {"type", "step"}  # the rest is in the state or the delta
    # the owner's GET also shows the run's webhook, deliveries and shares: never on the stream
    final = {k: v for k, v in stack.run(run_id).items() if k not in OWNER_ONLY}
    assert state == {**final, "terminal": True}
