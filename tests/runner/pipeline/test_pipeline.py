"""The whole pipeline with the offline model, through a recording reporter, on a real Redis."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import httpx
import msgspec
import pytest
from redis.asyncio import Redis

from services.runner.pipeline import Pipeline, PipelineError, PipelineSettings
from shared.catalog import plan_steps
from shared.results import AnalystReport, MarketData
from tests.runner.pipeline.support import ALL_ANALYSTS, RecordingReporter, request

pytestmark = pytest.mark.timeout(60)


def csv_settings(folder: Path) -> PipelineSettings:
    return PipelineSettings(data_provider="csv", csv_dir=folder)


async def test_synthetic_run_completes_with_reports_citing_numbers(
    redis: Redis, http: httpx.AsyncClient
) -> None:
    reporter = RecordingReporter()

    result = await Pipeline(PipelineSettings(), redis, http).run(request(), {}, reporter)

    assert result is not None
    assert reporter.steps == list(plan_steps(ALL_ANALYSTS))
    assert [s for s, _ in reporter.starts] == reporter.steps
    assert [i for _, i in reporter.starts] == list(range(len(reporter.steps)))
    assert result.decision in ("BUY", "SELL", "HOLD")
    assert result.demo and result.provider == "synthetic"
    assert [r.analyst for r in result.reports] == list(ALL_ANALYSTS)
    market = next(r for r in result.reports if r.analyst == "market")
    rsi = market.evidence["rsi14"]
    assert isinstance(rsi, float)
    assert f"RSI(14) at {rsi:.1f}" in market.report
    assert "synthetic demo data" in market.report
    data = reporter.outputs()["data_collection"]
    assert isinstance(data, MarketData) and len(data.prices.close) >= 252 and data.demo
    assert result.chart is not None and result.chart.close[-1] == result.last_close == data.prices.close[-1]
    # analysts, debate (bull, bear, manager), trader, risk debate (three voices), portfolio manager
    assert reporter.usage.calls == 6 + 3 + 1 + 3 + 1
    assert reporter.usage.prompt_tokens > 0 and reporter.usage.cost_usd == 0.0


async def test_decision_follows_from_the_evidence_scores(redis: Redis, http: httpx.AsyncClient) -> None:
    pipeline = Pipeline(PipelineSettings(), redis, http)
    for symbol in ("AAPL", "TSLA", "KO", "XOM"):
        result = await pipeline.run(request(symbol), {}, RecordingReporter())
        assert result is not None
        score = round(sum(r.score for r in result.reports) / len(result.reports), 3)
        expected = "BUY" if score > 0.12 else "SELL" if score <= -0.12 else "HOLD"
        assert result.decision == expected, (symbol, score)
        assert f"{score:+.2f}" in result.rationale
        assert 0.0 <= result.confidence <= 1.0 and result.key_risks


async def test_same_input_gives_the_same_decision(redis: Redis, http: httpx.AsyncClient) -> None:
    first = await Pipeline(PipelineSettings(), redis, http).run(request("NVDA"), {}, RecordingReporter())
    await redis.flushdb()  # a fresh fetch, not the cache, must give the same numbers
    second = await Pipeline(PipelineSettings(), redis, http).run(request("NVDA"), {}, RecordingReporter())
    assert msgspec.json.encode(first) == msgspec.json.encode(second)
    other = await Pipeline(PipelineSettings(), redis, http).run(request("AMZN"), {}, RecordingReporter())
    assert other is not None and first is not None and other.last_close != first.last_close


async def test_csv_fixture_run(redis: Redis, http: httpx.AsyncClient, market_dir: Path) -> None:
    reporter = RecordingReporter()
    result = await Pipeline(csv_settings(market_dir), redis, http).run(request("ACME"), {}, reporter)

    assert result is not None and result.provider == "csv" and not result.demo
    data = reporter.outputs()["data_collection"]
    assert isinstance(data, MarketData) and data.benchmark is not None  # SPY.csv beside it
    assert data.prices.dates[-1] == "2025-03-24" and data.prices.close[-1] == 72.47
    risk = next(r for r in result.reports if r.analyst == "risk")
    assert isinstance(risk.evidence["beta"], float)
    fundamentals = next(r for r in result.reports if r.analyst == "fundamentals")
    assert fundamentals.signal == "neutral" and fundamentals.evidence == {"available": "no"}
    assert "synthetic demo data" not in fundamentals.report


async def test_indicators_on_a_small_csv_match_hand_computation(
    redis: Redis, http: httpx.AsyncClient, market_dir: Path
) -> None:
    reporter = RecordingReporter()
    await Pipeline(csv_settings(market_dir), redis, http).run(
        request("MINI", ("market", "risk")), {}, reporter
    )
    outputs = reporter.outputs()
    risk, market = outputs["analyst:risk"], outputs["analyst:market"]
    assert isinstance(risk, AnalystReport) and isinstance(market, AnalystReport)
    # closes 10 11 10.5 11.5 12 11 11.5 12.5 13 12.5: worst fall 12 → 11, and 13 → 12.5
    assert risk.evidence["max_drawdown"] == pytest.approx(11 / 12 - 1, abs=1e-4)
    assert market.evidence["sma20"] is None and market.evidence["rsi14"] is None  # too short, not invented
    assert market.evidence["last_close"] == 12.5


async def test_resume_skips_done_steps_and_pays_only_for_the_rest(
    redis: Redis, http: httpx.AsyncClient
) -> None:
    pipeline = Pipeline(PipelineSettings(), redis, http)
    full = RecordingReporter()
    expected = await pipeline.run(request(), {}, full)
    done = {c.step: c.output for c in full.finished[:4]}  # data + market, fundamentals, news

    resumed = RecordingReporter()
    result = await pipeline.run(request(), done, resumed)

    assert [s for s, _ in resumed.starts] == full.steps[4:]
    assert [i for _, i in resumed.starts] == list(range(4, len(full.steps)))
    assert resumed.usage.calls == full.usage.calls - 3
    assert msgspec.json.encode(result) == msgspec.json.encode(expected)


async def test_budget_exceeded_fails_closed(redis: Redis, http: httpx.AsyncClient) -> None:
    reporter = RecordingReporter()
    with pytest.raises(PipelineError) as caught:
        await Pipeline(PipelineSettings(), redis, http).run(request(max_tokens=2500), {}, reporter)
    assert caught.value.code == "budget_exceeded" and not caught.value.transient
    assert 0 < len(reporter.finished) < len(plan_steps(ALL_ANALYSTS))
    assert reporter.usage.tokens <= 2500


async def test_operator_cap_bounds_a_bigger_request(redis: Redis, http: httpx.AsyncClient) -> None:
    settings = replace(PipelineSettings(), max_run_tokens=2500)
    with pytest.raises(PipelineError, match="2500") as caught:
        await Pipeline(settings, redis, http).run(request(max_tokens=10**9), {}, RecordingReporter())
    assert caught.value.code == "budget_exceeded"


async def test_budget_counts_what_earlier_attempts_spent(redis: Redis, http: httpx.AsyncClient) -> None:
    from shared.results import Usage

    pipeline = Pipeline(PipelineSettings(), redis, http)
    with pytest.raises(PipelineError, match="budget"):
        await pipeline.run(
            request(max_tokens=20_000), {}, RecordingReporter(), spent=Usage(prompt_tokens=19_900)
        )


async def test_unknown_model_is_refused_naming_the_valid_ones(redis: Redis, http: httpx.AsyncClient) -> None:
    reporter = RecordingReporter()
    with pytest.raises(PipelineError) as caught:
        await Pipeline(PipelineSettings(), redis, http).run(request(model_id="gpt-9"), {}, reporter)
    assert caught.value.code == "unknown_model" and "offline" in caught.value.message
    assert reporter.starts == []


async def test_unknown_analyst_is_refused(redis: Redis, http: httpx.AsyncClient) -> None:
    with pytest.raises(PipelineError) as caught:
        await Pipeline(PipelineSettings(), redis, http).run(
            request(analysts=("astrologer",)), {}, RecordingReporter()
        )
    assert caught.value.code == "invalid_request"


async def test_noop_pipeline_has_no_steps(redis: Redis, http: httpx.AsyncClient) -> None:
    reporter = RecordingReporter()
    assert await Pipeline(PipelineSettings(), redis, http).run(request(pipeline="noop"), {}, reporter) is None
    assert reporter.starts == []


async def test_binary_csv_is_bad_data(redis: Redis, http: httpx.AsyncClient, tmp_path: Path) -> None:
    (tmp_path / "BIN.csv").write_bytes(b"Date,Open\n\xff\xfe\x00garbage")
    with pytest.raises(PipelineError) as caught:
        await Pipeline(csv_settings(tmp_path), redis, http).run(request("BIN"), {}, RecordingReporter())
    assert caught.value.code == "bad_data" and "BIN.csv" in caught.value.message


@pytest.mark.parametrize(
    ("content", "where"),
    [
        (
            "Date,Open,High,Low,Close,Volume\n2024-01-02,1,2,1,1.5,100\n2024-01-03,1,2,1,abc,100\n",
            "BAD.csv line 3",
        ),
        (
            "Date,Open,High,Low,Close,Volume\n2024-01-02,1,2,1,1.5,100\n2024-01-02,1,2,1,1.6,100\n",
            "BAD.csv line 3",
        ),
        (
            "Date,Open,High,Low,Close,Volume\n2024-01-02,1,2,1,1.5,100\n\n2024-13-03,1,2,1,1.6,100\n",
            "BAD.csv line 4",
        ),
        ("Date,Open,High,Low,Close,Volume\n2024-01-02,1,2,1,1.5,100\n2024-01-03,1,2\n", "BAD.csv line 3"),
        ("Day,Open,High,Low,Close,Volume\n2024-01-02,1,2,1,1.5,100\n", "BAD.csv line 1"),
        ("", "BAD.csv line 1"),
    ],
)
async def test_bad_csv_names_file_and_line(
    redis: Redis, http: httpx.AsyncClient, tmp_path: Path, content: str, where: str
) -> None:
    (tmp_path / "BAD.csv").write_text(content)
    reporter = RecordingReporter()
    with pytest.raises(PipelineError) as caught:
        await Pipeline(csv_settings(tmp_path), redis, http).run(request("BAD"), {}, reporter)
    assert caught.value.code == "bad_data" and not caught.value.transient
    assert where in caught.value.message
    assert reporter.finished == []


@pytest.mark.parametrize("symbol", ["../secret", "..", "sub/ACME", "/etc/passwd"])
async def test_csv_refuses_a_path_outside_its_folder(
    redis: Redis, http: httpx.AsyncClient, tmp_path: Path, symbol: str
) -> None:
    folder = tmp_path / "csv"
    folder.mkdir()
    (tmp_path / "secret.csv").write_text("Date,Open,High,Low,Close,Volume\n2024-01-02,1,2,1,1.5,100\n")
    with pytest.raises(PipelineError) as caught:
        await Pipeline(csv_settings(folder), redis, http).run(request(symbol), {}, RecordingReporter())
    assert caught.value.code == "invalid_symbol"


async def test_unknown_csv_symbol(redis: Redis, http: httpx.AsyncClient, market_dir: Path) -> None:
    with pytest.raises(PipelineError) as caught:
        await Pipeline(csv_settings(market_dir), redis, http).run(request("NOPE"), {}, RecordingReporter())
    assert caught.value.code == "unknown_symbol"


async def test_ten_runs_fetch_once(redis: Redis, http: httpx.AsyncClient) -> None:
    pipeline = Pipeline(PipelineSettings(), redis, http)
    runs = [pipeline.run(request("MSFT", ("market",)), {}, RecordingReporter()) for _ in range(10)]
    results = await asyncio.gather(*runs)
    assert pipeline.data.fetches == 1
    assert await redis.exists(PipelineSettings().keys.market_cache("synthetic", "MSFT", "2026-11-20")) == 1

    other_runner = Pipeline(PipelineSettings(), redis, http)
    again = await other_runner.run(request("MSFT", ("market",)), {}, RecordingReporter())
    assert other_runner.data.fetches == 0
    assert again is not None and results[0] is not None
    assert again.last_close == results[0].last_close


async def test_pacing_reports_progress_within_each_step(redis: Redis, http: httpx.AsyncClient) -> None:
    settings = replace(PipelineSettings(), step_delay_s=0.03)
    reporter = RecordingReporter()
    await Pipeline(settings, redis, http).run(request(analysts=("risk",)), {}, reporter)
    for step in reporter.steps:
        fractions = [f for s, f, _ in reporter.ticks if s == step]
        assert len(fractions) >= 2 and fractions == sorted(fractions) and all(0 < f < 1 for f in fractions)


async def test_csv_symbol_matches_file_name_ignoring_case(
    redis: Redis, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    (tmp_path / "acme.csv").write_text((Path(__file__).parents[2] / "fixtures/market/MINI.csv").read_text())
    result = await Pipeline(csv_settings(tmp_path), redis, http).run(
        request("acme", ("risk",)), {}, RecordingReporter()
    )
    assert result is not None and result.symbol == "ACME" and result.last_close == 12.5


async def test_unreadable_cache_entry_is_fetched_again(redis: Redis, http: httpx.AsyncClient) -> None:
    key = PipelineSettings().keys.market_cache("synthetic", "IBM", "2026-11-20")
    await redis.set(key, b"not market data")
    pipeline = Pipeline(PipelineSettings(), redis, http)
    result = await pipeline.run(request("IBM", ("risk",)), {}, RecordingReporter())
    assert result is not None and pipeline.data.fetches == 1
    raw = await redis.get(key)
    assert isinstance(raw, bytes) and raw.startswith(b"{")
