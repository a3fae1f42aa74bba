"""Fork: a new run that carries its source's completed steps before ``fromStep`` and records its
parent; the runner's resume rule (skip what the stream shows completed) then recomputes the rest."""

from __future__ import annotations

import httpx

from services.runner.runs import _done_steps
from shared.store import EventStore
from tests.gateway.support import BODY, RUNS, Runner


async def test_a_fork_reuses_the_steps_before_from_step(
    client: httpx.AsyncClient, store: EventStore, runner: Runner
) -> None:
    source = (await client.post(RUNS, json=BODY)).json()["runId"]
    await runner.run_all(source)
    body = {"fromStep": "research_debate", "debateRounds": 3, "riskRounds": 2, "modelId": "offline"}
    forked = await client.post(f"{RUNS}/{source}/fork", json=body)
    assert forked.status_code == 202, forked.text
    run_id = forked.json()["runId"]
    reused = ["data_collection", "analyst:market", "analyst:risk"]
    assert forked.json()["reusedSteps"] == reused and run_id != source
    view = (await client.get(f"{RUNS}/{run_id}")).json()
    assert view["parentRunId"] == source and view["fromStep"] == "research_debate"
    assert view["status"] == "pending" and view["options"]["debateRounds"] == 3
    assert view["options"]["riskRounds"] == 2
    assert [s["name"] for s in view["steps"] if s["status"] == "completed"] == reused
    assert list(_done_steps(await store.read(run_id))) == reused  # what the runner will skip


async def test_a_bad_step_is_422_and_an_unknown_run_404(client: httpx.AsyncClient) -> None:
    source = (await client.post(RUNS, json=BODY)).json()["runId"]
    bad = await client.post(f"{RUNS}/{source}/fork", json={"fromStep": "astrology"})
    assert bad.status_code == 422 and bad.json()["field"] == "fromStep"
    missing = await client.post(
        f"{RUNS}/0190000000000000000000000000000000/fork", json={"fromStep": "trader"}
    )
    assert missing.status_code == 404
