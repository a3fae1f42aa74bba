"""Event encoding: old entries keep decoding, unknown ones are told apart from garbage."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from shared.events import EVENT_TYPES, EventCodec, MalformedEvent, RunRequested, UnknownEvent

FIXTURES = Path(__file__).parent / "fixtures"
ADDED_SINCE_V1: dict[str, dict[str, object]] = {
    "RunRequested": {"pipeline": "trading", "webhook": None, "parent_run_id": None, "from_step": None},
    "RunCompleted": {"output": None},
    "WebhookAttempted": {"endpoint": None},
}
"""Fields added after the samples were written: a re-encoded old event carries their defaults."""
_ASSESSED: dict[str, object] = {
    "price_target": None,
    "horizon_days": None,
    "position_pct": None,
    "memory": [],
}
ADDED_INSIDE: dict[tuple[str, str, str | None], dict[str, object]] = {
    ("RunRequested", "options", None): {"risk_rounds": 1},
    ("StepCompleted", "output", "data"): {"listed": True},
    ("StepCompleted", "output", "assessment"): _ASSESSED,
    ("StepCompleted", "output", "analyst"): {"tool_calls": [], "unsourced": []},
    ("RunCompleted", "result", None): {**_ASSESSED, "risk_debate": None, "data_note": None},
}
"""The same, one level down (in options, a step's output by its tag, a run's result)."""


def with_added(old: dict[str, object]) -> dict[str, object]:
    new = old | ADDED_SINCE_V1.get(str(old["type"]), {})
    for (kind, name, tag), added in ADDED_INSIDE.items():
        inner = new.get(name)
        if kind == old["type"] and isinstance(inner, dict) and (tag is None or inner.get("type") == tag):
            new[name] = inner | added
    result = new.get("result")
    if isinstance(result, dict) and isinstance(result.get("reports"), list):
        result["reports"] = [r | {"tool_calls": [], "unsourced": []} for r in result["reports"]]
    return new


def test_every_v1_sample_still_decodes_and_round_trips() -> None:
    codec = EventCodec()
    lines = (FIXTURES / "events-v1.jsonl").read_bytes().splitlines()
    decoded = [codec.decode(line) for line in lines]
    assert {type(e).__name__ for e in decoded} == EVENT_TYPES
    for line, event in zip(lines, decoded, strict=True):
        old = msgspec.json.decode(line)
        assert msgspec.json.decode(codec.encode(event)) == with_added(old)


def test_a_newer_version_with_extra_fields_decodes() -> None:
    codec = EventCodec()
    line = (FIXTURES / "events-v1.jsonl").read_bytes().splitlines()[0]
    newer = msgspec.json.decode(line)
    newer |= {"v": 2, "added_later": {"nested": [1, 2]}}
    event = codec.decode(msgspec.json.encode(newer))
    assert isinstance(event, RunRequested) and event.v == 2


def test_an_older_entry_missing_optional_fields_gets_defaults() -> None:
    minimal = b'{"type":"RunRequested","run_id":"r","at":"2026-01-01T00:00:00Z","user_id":"u",'
    minimal += b'"symbol":"AAPL","model_id":"offline","analysts":["risk"]}'
    event = EventCodec().decode(minimal)
    assert isinstance(event, RunRequested)
    assert event.v == 1 and event.priority == "normal" and event.options.debate_rounds == 1


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b'{"type":"RunTeleported","run_id":"r"}', UnknownEvent),
        (b'{"type":"RunRequested","run_id":"r"}', MalformedEvent),
        (b"\xff\xfe", MalformedEvent),
        (b"[1,2]", MalformedEvent),
    ],
)
def test_entries_that_are_not_usable_events_are_classified(data: bytes, error: type) -> None:
    with pytest.raises(error):
        EventCodec().decode(data)
