"""``GET /runs/{a}/diff/{b}``: what differs between two of the caller's runs, and only theirs."""

from __future__ import annotations

import httpx
import msgspec

from shared.events import RunCompleted, RunStarted
from shared.results import Usage
from shared.store import EventStore
from tests.gateway.support import BODY, RUNS, result


async def test_diff_names_what_changed_and_keeps_what_did_not(
    client: httpx.AsyncClient, store: EventStore
) -> None:
    a = (await client.post(RUNS, json=BODY)).json()["runId"]
    b = (await client.post(RUNS, json={**BODY, "debateRounds": 2})).json()["runId"]
    base = result()
    other = msgspec.structs.replace(base, decision="SELL", confidence=0.4)
    for run_id, res, cost in ((a, base, 0.01), (b, other, 0.02)):
        await store.append(RunStarted(run_id=run_id, runner_id="r", attempt=1, steps=()), fence="f")
        await store.append(
            RunCompleted(run_id=run_id, result=res, usage=Usage(calls=1, cost_usd=cost)), fence="f"
        )
    doc = (await client.get(f"{RUNS}/{a}/diff/{b}")).json()
    assert doc["changed"]["decision"] == {"a": "BUY", "b": "SELL"}
    assert doc["changed"]["confidence"] == {"a": 0.7, "b": 0.4}
    assert doc["changed"]["costUsd"] == {"a": 0.01, "b": 0.02}
    assert doc["changed"]["options"]["b"]["debateRounds"] == 2
    assert "rating" in doc["same"] and "symbol" in doc["same"]
    assert doc["sameValues"]["rating"] == base.rating and doc["sameValues"].keys() == set(doc["same"])
    assert (await client.get(f"{RUNS}/{a}/diff/not-a-run")).status_code == 404
