"""The desk as a reader meets it: labelled data, the full step order, and a note that hangs together."""

from __future__ import annotations

import httpx
import pytest
from redis.asyncio import Redis

from services.runner.pipeline import Pipeline, PipelineSettings
from shared.results import NO_MARKET
from tests.runner.pipeline.support import RecordingReporter, request

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
