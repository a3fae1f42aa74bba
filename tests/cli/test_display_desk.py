"""The CLI's rendering of a finished desk run: the data label and the desk's sections."""

from __future__ import annotations

from typing import Any

from services.cli.display import render_result

RESULT: dict[str, Any] = {
    "symbol": "ZZZZ9",
    "decision": "HOLD",
    "rating": "Hold",
    "confidence": 0.5,
    "horizon": "3 months",
    "rationale": "Why.",
    "keyRisks": [],
    "reports": [],
    "provider": "synthetic",
    "demo": True,
    "dataNote": "Demo data: synthetic prices; no real market: illustration only.",
}


def test_a_demo_run_prints_its_data_label() -> None:
    text = render_result({"runId": "r1", "symbol": "ZZZZ9", "status": "completed", "result": RESULT})
    assert "DEMO DATA" in text and "no real market: illustration only" in text
