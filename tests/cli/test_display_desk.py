"""The CLI's rendering of a finished desk run: the data label and the desk's sections."""

from __future__ import annotations

from typing import Any

from services.cli.display import render_models, render_result

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
    "priceTarget": 101.5,
    "horizonDays": 91,
    "positionPct": 4.5,
    "debate": {"turns": [], "summary": "The bull findings add up.", "lean": "neutral"},
    "riskDebate": {"turns": [], "summary": "The conservative voice prevails.", "prevailing": "conservative"},
    "memory": [
        {
            "runId": "a",
            "date": "2026-07-01",
            "decision": "BUY",
            "price": 100.0,
            "realisedReturn": 0.042,
            "hit": True,
            "demo": True,
        },
    ],
}


def test_a_demo_run_prints_its_data_label() -> None:
    text = render_result({"runId": "r1", "symbol": "ZZZZ9", "status": "completed", "result": RESULT})
    assert "DEMO DATA" in text and "no real market: illustration only" in text


def test_the_desk_sections_are_printed() -> None:
    text = render_result({"runId": "r1", "symbol": "ZZZZ9", "status": "completed", "result": RESULT})
    assert "Price target: 101.5 within 91 days, position 4.5%" in text
    assert "Debate (leans neutral): The bull findings add up." in text
    assert "Risk debate (conservative prevails): The conservative voice prevails." in text


def test_earlier_calls_show_their_outcome() -> None:
    text = render_result({"runId": "r1", "symbol": "ZZZZ9", "status": "completed", "result": RESULT})
    assert "Earlier: BUY on 2026-07-01 at 100.0: +4.2% ✓ (demo data)" in text


def test_unavailable_models_are_marked_with_the_reason() -> None:
    text = render_models(
        [
            {"id": "offline", "label": "Offline", "default": True, "available": True, "reason": None},
            {"id": "gpt", "label": "GPT", "available": False, "reason": "needs the environment variable X"},
        ]
    )
    assert text.splitlines() == [
        "  offline: Offline [default]",
        "✗ gpt: GPT  (unavailable: needs the environment variable X)",
    ]
