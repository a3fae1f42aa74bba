"""Pipelines registered with TT_PIPELINES: listed, named by a run, unknown names refused."""

from __future__ import annotations

import httpx

from shared.events import RunRequested
from shared.store import EventStore
from tests.gateway.conftest import GatewayFactory
from tests.gateway.support import RUNS

REGISTERED = {"echo": "examples.nowhere:graph"}
"""The gateway never imports a registered module: this one does not even exist."""


async def test_registered_pipelines_are_listed_and_a_run_names_one(
    start_gateway: GatewayFactory, store: EventStore
) -> None:
    gateway = await start_gateway(pipelines=REGISTERED)
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as client:
        listed = (await client.get("/api/trading/pipelines")).json()["pipelines"]
        assert [(p["name"], p["builtin"]) for p in listed] == [("trading", True), ("echo", False)]
        assert listed[0]["steps"][0] == "data_collection" and listed[1]["steps"] is None
        response = await client.post(
            RUNS, json={"symbol": "AAPL", "analysts": ["market"], "pipeline": "echo"}
        )
        assert response.status_code == 202, response.text
        request = (await store.read(response.json()["runId"]))[0][1]
        assert isinstance(request, RunRequested)
        assert (request.pipeline, request.options.pipeline) == ("echo", "full")
        noop = await client.post(RUNS, json={"symbol": "AAPL", "analysts": ["market"], "pipeline": "noop"})
        request = (await store.read(noop.json()["runId"]))[0][1]
        assert isinstance(request, RunRequested)
        assert (request.pipeline, request.options.pipeline) == ("trading", "noop")


async def test_an_unknown_pipeline_is_a_422_naming_the_valid_ones(start_gateway: GatewayFactory) -> None:
    gateway = await start_gateway(pipelines=REGISTERED)
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as client:
        response = await client.post(RUNS, json={"symbol": "AAPL", "analysts": ["market"], "pipeline": "ech"})
    problem = response.json()
    assert response.status_code == 422 and problem["field"] == "pipeline"
    assert problem["validPipelines"] == ["full", "noop", "trading", "echo"] and "echo" in problem["detail"]
