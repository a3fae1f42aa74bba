"""The page's fork and diff logic (static/forks.js, static/diff.js) run on node against what the
gateway answers: the Fork form sends only what changed and the server takes it; the side-by-side
diff puts the outcome first, spreads the options out and leaves out what is empty in both."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.gateway.support import BODY, RUNS, Runner

STATIC = Path(__file__).resolve().parents[2] / "services/gateway/static"
CALL_JS = """
import { readFileSync } from "fs";
const [file, name] = process.argv.slice(1);
const args = JSON.parse(readFileSync(0, "utf8"));
console.log(JSON.stringify((await import(file))[name](...args)));
"""

pytestmark = pytest.mark.skipif(shutil.which("node") is None, reason="the page's modules run on node")


def call(module: str, name: str, *args: Any) -> Any:
    done = subprocess.run(
        ["node", "--input-type=module", "-e", CALL_JS, str(STATIC / module), name],
        input=json.dumps(args), capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    return json.loads(done.stdout)


async def test_the_fork_form_sends_only_what_changed(client: httpx.AsyncClient, runner: Runner) -> None:
    source = (await client.post(RUNS, json=BODY)).json()["runId"]
    await runner.run_all(source)
    view = (await client.get(f"{RUNS}/{source}")).json()
    form = {  # the form as it opens (the source's own values), the risk rounds raised
        "fromStep": "trader", "modelId": view["modelId"], "analysts": list(reversed(view["analysts"])),
        "debateRounds": str(view["options"]["debateRounds"]), "riskRounds": "2", "maxCostUsd": "",
    }  # fmt: skip
    body = call("forks.js", "forkBody", view, form)
    assert body == {"fromStep": "trader", "riskRounds": 2}
    forked = await client.post(f"{RUNS}/{source}/fork", json=body)
    assert forked.status_code == 202, forked.text
    fork = (await client.get(f"{RUNS}/{forked.json()['runId']}")).json()
    assert fork["options"] == {**view["options"], "riskRounds": 2}
    assert call("forks.js", "changes", view, fork) == "risk rounds 2"


async def test_the_diff_reads_outcome_first_with_the_options_spread_out(
    client: httpx.AsyncClient, runner: Runner
) -> None:
    a = (await client.post(RUNS, json=BODY)).json()["runId"]
    b = (await client.post(RUNS, json={**BODY, "analysts": ["market"], "debateRounds": 2})).json()["runId"]
    for run_id in (a, b):
        await runner.run_all(run_id)
    doc = (await client.get(f"{RUNS}/{a}/diff/{b}")).json()
    doc["sameValues"] |= {"analysts.news.score": 0.1, "analysts.news.signal": "bullish"}  # as a desk run's
    rows = {key: (left, right, differs) for key, left, right, differs in call("diff.js", "diffRows", doc)}
    keys = list(rows)
    assert keys[0] == "decision" and keys.index("horizon") < keys.index("modelId") < keys.index("costUsd")
    assert "options" not in rows and rows["options.debateRounds"] == (1, 2, True)
    assert rows["analysts"][2] and not rows["modelId"][2] and not rows["symbol"][2]
    assert "options.deadlineS" not in rows  # empty in both runs
    assert keys.index("horizon") < keys.index("analysts.news.signal") < keys.index("analysts.news.score")
    assert keys.index("analysts.news.score") < keys.index("modelId")
