"""The bench's bare-calls pipeline against a real llmsim process, through the runner's client."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

from bench.calls_pipeline import CALLS, build
from bench.llm_workload import models_file
from shared.events import RunRequested
from shared.results import Usage
from tests.runner.pipeline.support import RecordingReporter
from tests.support.processes import ServiceProcess

pytestmark = pytest.mark.timeout(40)
FAST = {"TT_LLMSIM_TTFT_S": "0.01", "TT_LLMSIM_TOKENS_PER_S": "1000", "TT_LLMSIM_COMPLETION_TOKENS": "20"}


async def test_each_step_is_one_model_call_reported_with_its_usage(
    tmp_path: Path, redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    with ServiceProcess("llmsim", FAST, port_var="TT_LLMSIM_PORT", log_dir=tmp_path) as sim:
        monkeypatch.setenv("TT_MODELS", str(models_file(tmp_path, sim.url)))
        request = RunRequested(run_id="r1", user_id="u", symbol="ACME", model_id="sim", analysts=())
        reporter = RecordingReporter()
        async with httpx.AsyncClient() as http:
            result = await build(redis, http).run(request, {"call_0": None}, reporter, spent=Usage())
            stats = (await http.get(f"{sim.url}/stats")).json()
    assert result is not None
    assert [step for step, _ in reporter.starts] == [f"call_{k}" for k in range(1, CALLS)]  # call_0 was done
    assert stats["statuses"] == {"200": CALLS - 1}
    assert all(f.usage.calls == 1 and f.usage.completion_tokens == 20 for f in reporter.finished)
    assert len(reporter.ticks) == CALLS - 1
