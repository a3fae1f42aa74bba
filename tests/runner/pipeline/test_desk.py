"""The desk as a reader meets it: labelled data, the full step order, and a note that hangs together."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import httpx
import msgspec
import pytest
from msgspec.structs import replace
from redis.asyncio import Redis

from services.runner.pipeline import Pipeline, PipelineSettings, desk, offline
from services.runner.pipeline.llm import ChatRequest
from services.runner.pipeline.notes import sentences
from shared.catalog import DATA_STEP, FINAL_STEP, RISK_STEP, TRADER_STEP, plan_steps
from shared.reducer import _describe as describe
from shared.results import NO_MARKET, Assessment, Debate, RunResult
from tests.runner.pipeline.support import ALL_ANALYSTS, AS_OF, RecordingReporter, request

pytestmark = pytest.mark.timeout(60)


async def test_every_demo_run_is_labelled_and_an_unknown_ticker_has_no_market(
    redis: Redis, http: httpx.AsyncClient
) -> None:
    pipeline = Pipeline(PipelineSettings(), redis, http)
    known = await pipeline.run(request("AAPL", ("market",)), {}, RecordingReporter())
    made_up = await pipeline.run(request("ZZZZ9", ("market",)), {}, RecordingReporter())
    assert known is not None and made_up is not None
    assert known.data_note is not None and "Demo data" in known.data_note and NO_MARKET not in known.data_note
    assert made_up.data_note is not None and NO_MARKET in made_up.data_note


def sections(result: RunResult) -> dict[str, str]:
    """Every piece of prose a reader sees in a finished run, by where it appears."""
    found = {f"report:{r.analyst}": r.report for r in result.reports}
    if result.debate is not None:
        found |= {f"debate:{t.side}{t.round}": t.argument for t in result.debate.turns}
        found["debate:manager"] = result.debate.summary
    if result.trade is not None:
        found["trade"] = result.trade.rationale
    if result.risk_debate is not None:
        found |= {f"risk:{t.stance}{t.round}": t.argument for t in result.risk_debate.turns}
        found["risk:verdict"] = result.risk_debate.summary
    found["rationale"] = result.rationale
    found |= {f"risk{i}": text for i, text in enumerate(result.key_risks)}
    return found


def problems(result: RunResult) -> list[str]:
    """What makes a run read as glued machine text: repeats, placeholders, unexplained leans."""
    found: list[str] = []
    where: dict[str, str] = {}
    for name, text in sections(result).items():
        found += [f"{name}: placeholder {m.group()!r}" for m in PLACEHOLDER.finditer(text)]
        for sentence in sentences(text):
            key = " ".join(sentence.lower().split())
            if key in where:
                found.append(f"repeated in {where[key]} and {name}: {sentence!r}")
            where.setdefault(key, name)
    debate = result.debate
    if debate is not None and LEANS[result.decision] != debate.lean:
        if f"leaned {debate.lean}" not in result.rationale or "because" not in result.rationale:
            found.append(f"debate leans {debate.lean}, decision {result.decision}, unexplained")
    return found


PLACEHOLDER = re.compile(r"\w\(s\)|[{}]|\b(?:None|nan|n/a|TODO|null)\b")
LEANS = {"BUY": "bullish", "SELL": "bearish", "HOLD": "neutral"}
CASES = [
    ("AAPL", ALL_ANALYSTS, 1, 1),
    ("NVDA", ALL_ANALYSTS, 3, 2),
    ("TSLA", ("market", "risk"), 2, 3),
    ("KO", ("fundamentals", "news", "sentiment"), 5, 5),
    ("XOM", ("invest",), 1, 1),
    ("ZZZZ9", ("market", "sentiment", "risk"), 2, 1),
    ("MSFT", ALL_ANALYSTS, 0, 1),
]


async def test_whole_offline_runs_read_as_one_desk_note(redis: Redis, http: httpx.AsyncClient) -> None:
    pipeline = Pipeline(PipelineSettings(), redis, http)
    for symbol, analysts, debate_rounds, risk_rounds in CASES:
        run = request(symbol, analysts, debate_rounds=debate_rounds, risk_rounds=risk_rounds)
        result = await pipeline.run(run, {}, RecordingReporter())
        assert result is not None
        assert problems(result) == [], (symbol, problems(result))


def dump(result: RunResult) -> str:
    return "\n\n".join(f"## {name}\n{text}" for name, text in sections(result).items())


async def test_a_lean_the_decision_departs_from_is_explained(redis: Redis, http: httpx.AsyncClient) -> None:
    result = await Pipeline(PipelineSettings(), redis, http).run(request("NVDA"), {}, RecordingReporter())
    assert result is not None and result.debate is not None and result.decision == "BUY"
    data = await Pipeline(PipelineSettings(), redis, http).data.get("synthetic", "NVDA", AS_OF.date())
    neutral = msgspec.structs.replace(result.debate, lean="neutral")
    call = desk.assessment(data, result.reports, neutral, result.trade, result.risk_debate)
    assert call.decision == "BUY" and "leaned neutral" in call.rationale and "because" in call.rationale
    assert problems(msgspec.structs.replace(result, debate=neutral, rationale=call.rationale)) == []
    unexplained = msgspec.structs.replace(result, debate=neutral)
    assert problems(unexplained) == ["debate leans neutral, decision BUY, unexplained"]


async def test_the_desk_runs_every_step_in_its_planned_order(redis: Redis, http: httpx.AsyncClient) -> None:
    reporter = RecordingReporter()
    run = request("AAPL", ("market", "risk"), debate_rounds=1, risk_rounds=2)
    result = await Pipeline(PipelineSettings(), redis, http).run(run, {}, reporter)
    assert result is not None and result.risk_debate is not None
    assert reporter.steps == list(plan_steps(("market", "risk")))
    assert reporter.steps[-3:] == [TRADER_STEP, RISK_STEP, FINAL_STEP]
    stances = [(t.stance, t.round) for t in result.risk_debate.turns]
    assert stances == [(s, r) for r in (1, 2) for s in ("aggressive", "conservative", "neutral")]
    assert result.price_target is not None and result.horizon_days == 91
    assert result.position_pct == result.risk_debate.position_pct
    assert result.rating in ("Buy", "Overweight", "Hold", "Underweight", "Sell")


async def test_the_next_run_on_a_symbol_learns_from_the_last_calls_and_their_outcomes(
    redis: Redis, http: httpx.AsyncClient
) -> None:
    pipeline = Pipeline(PipelineSettings(), redis, http)
    earlier = replace(request("AAPL", ("market",)), run_id="run-earlier", at=AS_OF - timedelta(days=120))
    first = await pipeline.run(earlier, {}, RecordingReporter())
    assert first is not None and first.memory == []
    assert "no earlier calls on AAPL" in first.rationale
    now = await pipeline.run(request("AAPL", ("market",)), {}, RecordingReporter())
    assert now is not None and [c.run_id for c in now.memory] == ["run-earlier"]
    past = now.memory[0]
    assert past.decision == first.decision and past.price == first.last_close
    assert past.horizon_ended and past.demo and past.realised_return is not None
    data = await pipeline.data.get("synthetic", "AAPL", AS_OF.date())
    ends = (earlier.at.date() + timedelta(days=91)).isoformat()
    close = [c for d, c in zip(data.prices.dates, data.prices.close, strict=True) if d <= ends][-1]
    assert past.realised_return == round(close / past.price - 1, 4)
    assert "Earlier calls on AAPL (demo data)" in now.rationale and (
        "✓" in now.rationale or "✗" in now.rationale
    )
    again = await pipeline.run(replace(earlier, run_id="run-before"), {}, RecordingReporter())
    assert again is not None and again.memory == []  # a call made later is not a memory of an earlier date


async def test_a_csv_run_without_fundamentals_or_headlines_also_reads_cleanly(
    redis: Redis, http: httpx.AsyncClient, market_dir: Path
) -> None:
    settings = PipelineSettings(data_provider="csv", csv_dir=market_dir)
    run = request("ACME", ALL_ANALYSTS, debate_rounds=3, risk_rounds=3)
    result = await Pipeline(settings, redis, http).run(run, {}, RecordingReporter())
    assert result is not None and not result.demo and result.data_note is None
    assert problems(result) == []


def test_a_bearish_report_is_not_led_by_its_strongest_bullish_finding() -> None:
    facts = {
        "name": "Market analyst",
        "symbol": "ZZZZ9",
        "signal": "bearish",
        "score": -0.42,
        "demo": True,
        "findings": [["close 18.05 is above the 50-day average 17.96", 0.3], ["MACD below", -0.2]],
    }
    text = offline.write(ChatRequest(task="analyst:market", messages=[], facts=facts))
    assert text.splitlines()[0] == "Bearish on ZZZZ9 (score -0.42), led by MACD below."


async def test_the_step_list_describes_the_risk_debate_and_a_made_up_ticker(
    redis: Redis, http: httpx.AsyncClient
) -> None:
    reporter = RecordingReporter()
    await Pipeline(PipelineSettings(), redis, http).run(request("ZZZZ9", ("risk",)), {}, reporter)
    outputs = reporter.outputs()
    assert describe(outputs[DATA_STEP]).endswith("(demo data, no real market)")
    assert describe(outputs[RISK_STEP]).startswith("the ") and "voice prevails" in describe(
        outputs[RISK_STEP]
    )


def test_a_real_models_unexplained_departure_from_the_lean_is_said() -> None:
    debate = Debate(turns=[], summary="s", lean="bullish")
    call = Assessment(
        decision="SELL", rating="Underweight", confidence=0.6, horizon="3 months",
        rationale="Valuation is stretched.", key_risks=[],
    )  # fmt: skip
    said = desk.explained(call, debate)
    assert said.rationale.startswith("Valuation is stretched. The research debate leaned bullish;")
    reasoned = msgspec.structs.replace(call, rationale="Despite the bullish debate, valuation is stretched.")
    assert desk.explained(reasoned, debate) == reasoned
    assert (
        desk.explained(msgspec.structs.replace(call, decision="BUY", rating="Buy"), debate).rationale
        == call.rationale
    )


async def test_a_run_never_learns_another_users_calls(redis: Redis, http: httpx.AsyncClient) -> None:
    pipeline = Pipeline(PipelineSettings(), redis, http)
    earlier = replace(
        request("MSFT", ("market",)), run_id="run-alice", user_id="alice", at=AS_OF - timedelta(days=120)
    )
    assert await pipeline.run(earlier, {}, RecordingReporter()) is not None
    bob = await pipeline.run(replace(request("MSFT", ("market",)), user_id="bob"), {}, RecordingReporter())
    assert bob is not None and bob.memory == [] and "alice" not in msgspec.json.encode(bob).decode()
    alice = await pipeline.run(
        replace(request("MSFT", ("market",)), user_id="alice"), {}, RecordingReporter()
    )
    assert alice is not None and [c.run_id for c in alice.memory] == ["run-alice"]
