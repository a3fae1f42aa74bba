"""The whole pipeline on synthetic data with the offline model, through a recording reporter."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from redis.asyncio import Redis

from services.runner.pipeline import Pipeline, PipelineSettings
from shared.catalog import plan_steps
from shared.results import MarketData
from tests.runner.pipeline.support import ALL_ANALYSTS, RecordingReporter, request

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


async def test_synthetic_run_completes_with_reports_citing_numbers(
    redis: Redis, http: httpx.AsyncClient
) -> None:
    pipeline = Pipeline(PipelineSettings(), redis, http)
    reporter = RecordingReporter()
    req = request()

    result = await pipeline.run(req, {}, reporter)

    assert result is not None
    assert reporter.steps == list(plan_steps(ALL_ANALYSTS))
    assert [s for s, _ in reporter.starts] == reporter.steps
    assert result.decision in ("BUY", "SELL", "HOLD")
    assert result.demo and result.provider == "synthetic"
    assert [r.analyst for r in result.reports] == list(ALL_ANALYSTS)
    market = next(r for r in result.reports if r.analyst == "market")
    rsi = market.evidence["rsi14"]
    assert isinstance(rsi, float)
    assert f"{rsi:.1f}" in market.report
    data = reporter.outputs()["data_collection"]
    assert isinstance(data, MarketData) and len(data.prices.close) >= 252
    assert reporter.usage.calls == 6 + 3 + 2
