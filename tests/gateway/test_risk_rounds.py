"""``riskRounds``: optional, 1 to 5, carried into the run's options."""

from __future__ import annotations

import httpx
import pytest

from shared.store import EventStore
from tests.gateway.support import BODY, RUNS


@pytest.mark.parametrize("value", [0, 6, "2", 1.5, None])
async def test_out_of_bounds_risk_rounds_are_422_naming_the_field(
    client: httpx.AsyncClient, value: object
) -> None:
    response = await client.post(RUNS, json={**BODY, "riskRounds": value})
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"] == "riskRounds"


async def test_risk_rounds_reach_the_run_options(client: httpx.AsyncClient, store: EventStore) -> None:
    default = (await client.post(RUNS, json=BODY)).json()["runId"]
    three = (await client.post(RUNS, json={**BODY, "riskRounds": 3})).json()["runId"]
    assert (await store.read(default))[0][1].options.risk_rounds == 1  # type: ignore[union-attr]
    assert (await store.read(three))[0][1].options.risk_rounds == 3  # type: ignore[union-attr]
