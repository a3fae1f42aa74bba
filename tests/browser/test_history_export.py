"""History that says how calls turned out and what they cost, older runs, demo labels, export.

The page renders what the API sends. Where the run list does not carry a field yet (outcomes,
per-step usage, the archive), the strict tests put it into the real answers on the way to the
page (``page.route``), so the rendering is proven on its own; the tests at the end ask the real
backend for it end to end."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import BrowserContext, Page, Route, expect

from tests.browser.conftest import PHONE, Shoot, assert_no_overflow
from tests.browser.test_ui import open_page
from tests.e2e.stack import Stack
from tests.support.processes import ServiceProcess

pytestmark = [pytest.mark.browser, pytest.mark.timeout(150)]
RIGHT = {"realisedReturn": 0.032, "correct": True, "horizonDays": 91, "demo": True}
WRONG = {"realisedReturn": -0.015, "correct": False, "horizonDays": 91, "demo": True, "horizonEnded": False}
SPENT = {"calls": 3, "promptTokens": 1000, "completionTokens": 234, "costUsd": 0.0123}
DEMO_NOTE = "Demo data: synthetic prices generated for illustration, not real market data."
STEP_SPENT = {"calls": 2, "promptTokens": 800, "completionTokens": 434, "costUsd": 0.0021}


def listing(url: str) -> bool:
    return "/api/trading/runs?" in url and "status=active" not in url


def one_run(url: str) -> bool:
    return "/api/trading/runs/" in url.split("?")[0] and not url.split("?")[0].endswith("/events")


def rewrite(page: Page, matches: Callable[[str], bool], change: Callable[[Any], Any]) -> None:
    """The real answers to ``matches`` reach the page changed by ``change``."""

    def handle(route: Route) -> None:
        response = route.fetch()
        route.fulfill(response=response, json=change(response.json()))

    page.route(matches, handle)


def finished(stack: Stack, symbol: str, analysts: tuple[str, ...] = ("market",)) -> str:
    run_id = stack.submit(symbol, analysts)
    stack.wait_status(run_id, {"completed"}, timeout_s=90)
    return run_id


def test_the_start_page_history_rows_and_run_card_say_demo_data(
    context: BrowserContext, stack: Stack, shoot: Shoot
) -> None:
    real, made_up = finished(stack, "KO"), finished(stack, "ZZZZ9")
    page = open_page(context, stack, "KO")
    expect(page.locator("#data-note")).to_have_text("Demo data — synthetic prices, not a real market")
    row = page.locator(f"#history li[data-run-id='{real}'] .demo-tag")
    expect(row).to_have_text("Demo data")
    expect(row).to_have_attribute(
        "title", "Demo data: synthetic prices generated for illustration, not real market data."
    )
    page.click("#history-all")
    expect(page.locator(f"#history li[data-run-id='{made_up}'] .demo-tag")).to_have_text(
        "Demo data · no real market"
    )
    page.locator(f"#history li[data-run-id='{real}']").click()
    expect(page.locator("#run-demo")).to_have_text("Demo data")
    shoot(page, "demo-labels")


def test_history_rows_show_outcomes_and_spend_with_what_they_mean(
    context: BrowserContext, stack: Stack, shoot: Shoot
) -> None:
    right, wrong = finished(stack, "PEP"), finished(stack, "PEP")
    marks = {right: {"outcome": RIGHT, "usage": SPENT}, wrong: {"outcome": WRONG}}

    def with_outcomes(body: Any) -> Any:
        for run in body["runs"]:
            run.update(marks.get(run["runId"], {}))
        return body

    page = open_page(context, stack, "PEP")
    rewrite(page, listing, with_outcomes)
    page.reload()
    good = page.locator(f"#history li[data-run-id='{right}'] .outcome")
    expect(good).to_have_text("✓ +3.2 %")
    expect(good).to_have_attribute("data-correct", "true")
    title = good.get_attribute("title") or ""
    assert "over its 91-day horizon" in title and "on demo data" in title and "went its way" in title, title
    bad = page.locator(f"#history li[data-run-id='{wrong}'] .outcome")
    expect(bad).to_have_text("✗ -1.5 % so far")  # measured before its horizon ended
    assert "has not ended" in (bad.get_attribute("title") or "")
    expect(page.locator(f"#history li[data-run-id='{right}'] .spend")).to_have_text(
        "3 calls · 1,234 tokens · $0.0123"
    )
    offline = stack.run(wrong)["usage"]  # the offline model's calls are counted, and cost nothing
    expect(page.locator(f"#history li[data-run-id='{wrong}'] .spend")).to_have_text(
        f"{offline['calls']} calls · {offline['promptTokens'] + offline['completionTokens']:,} tokens · $0.00"
    )

    page.locator(f"#history li[data-run-id='{right}']").click()  # opening a run keeps its row's outcome
    expect(page.locator(f"#run[data-run-id='{right}']")).to_be_visible()
    expect(good).to_have_text("✓ +3.2 %")
    page.set_viewport_size(PHONE)
    expect(good).to_be_visible()
    shoot(page, "outcomes")


def test_each_step_shows_its_calls_tokens_and_cost_and_the_markdown_has_them(
    context: BrowserContext, stack: Stack, tmp_path: Path
) -> None:
    run_id = finished(stack, "MRK")

    def with_step_usage(state: Any) -> Any:
        for step in state["steps"]:
            if step["name"] == "analyst:market":
                step["usage"] = STEP_SPENT
        return state

    page = context.new_page()
    rewrite(page, one_run, with_step_usage)
    page.goto(f"{stack.url}/#/runs/{run_id}")
    page.click("#steps-summary")
    used = page.locator("#steps .step[data-step='analyst:market'] .step-usage")
    expect(used).to_have_text("2 LLM calls · 1,234 tokens · $0.0021")
    expect(page.locator("#steps .step[data-step='data_collection'] .step-usage")).to_have_count(0)
    page.click("#export summary")
    with page.expect_download() as download:
        page.click("#export-md")
    text = Path(download.value.path()).read_text()
    assert "- Market analyst: completed" in text and "(2 LLM calls · 1,234 tokens · $0.0021)" in text


def test_export_gives_a_readable_markdown_note_and_the_json_of_the_run(
    context: BrowserContext, stack: Stack, shoot: Shoot
) -> None:
    run_id = finished(stack, "AMGN", ("market", "fundamentals"))
    state = stack.run(run_id)
    result = state["result"]
    page = context.new_page()
    page.goto(f"{stack.url}/#/runs/{run_id}")
    expect(page.locator(f"#run[data-run-id='{run_id}']")).to_be_visible()
    page.click("#risk-debate summary")
    page.set_viewport_size(PHONE)
    expect(page.locator("#result svg.chart")).to_have_attribute("viewBox", re.compile(r"^0 0 360 "))
    expect(page.locator("#risk-debate")).to_have_attribute("open", "")  # the phone's redraw keeps it open
    page.click("#export summary")
    expect(page.locator("#export-md")).to_be_in_viewport()
    assert_no_overflow(page, "export menu open on a phone")
    shoot(page, "export-menu", sizes=False)
    with page.expect_download() as md:
        page.click("#export-md")
    assert md.value.suggested_filename == f"tickertape-AMGN-{run_id}.md"
    note = Path(md.value.path()).read_text()
    assert note.startswith(f"# AMGN — {result['decision']}\n")
    order = ["- Rating:", "- Price target:", "- Horizon:", "- Confidence:", "## Analyst reports",
             "### Market analyst", "### Fundamentals analyst", "## Bull vs bear debate",
             "## Trader's proposal", "## Risk debate", "## Portfolio manager", "## Steps"]  # fmt: skip
    places = [note.find(part) for part in order]
    assert all(p >= 0 for p in places) and places == sorted(places), list(zip(order, places, strict=True))
    assert result["rationale"].split("\n")[0] in note
    for turn in result["riskDebate"]["turns"]:  # each voice once, its name not repeated before its words
        stance, argument = turn["stance"], turn["argument"]
        said = argument[len(stance) + 2 :] if argument.lower().startswith(f"{stance}: ") else argument
        assert f"**{stance.capitalize()} (round {turn['round']}):** {said}" in note
    assert f"- Usage: {state['usage']['calls']} LLM calls · " in note and "$0.00" in note
    assert "Demo data" in note and f"({stack.url}/#/runs/{run_id})" in note
    assert not re.search(r"### .*: (\w+) \(\1\)", note)  # "Market analyst: bullish (bullish)"
    for junk in ("undefined", "null", "NaN", "[object Object]", "\n\n\n"):
        assert junk not in note, junk

    page.click("#export summary")
    with page.expect_download() as js:
        page.click("#export-json")
    assert js.value.suggested_filename == f"tickertape-AMGN-{run_id}.json"
    exported = json.loads(Path(js.value.path()).read_text())
    assert exported["runId"] == run_id and exported["result"]["decision"] == result["decision"]


def test_older_runs_lists_the_archive_and_opens_one(
    context: BrowserContext, stack: Stack, shoot: Shoot
) -> None:
    old = finished(stack, "IBM")
    page = open_page(context, stack, "HPQ")
    expect(page.locator("#history .empty")).to_have_text("No analyses of HPQ yet.")

    def archive_answer(route: Route) -> None:  # the archive holds IBM's run; HPQ's history is empty
        response = route.fetch(url=f"{stack.api}/runs?symbol=IBM&limit=50")
        route.fulfill(response=response)

    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if "archived=true" in r.url else None)
    page.route(lambda url: "archived=true" in url, archive_answer)
    page.click("#history-older")
    row = page.locator(f"#history-archived-list li[data-run-id='{old}']")
    expect(row).to_be_visible()
    assert asked and "symbol=HPQ" in asked[0], asked
    expect(page.locator("#history-older")).to_have_attribute("aria-expanded", "true")
    shoot(page, "older-runs")
    row.click()
    expect(page).to_have_url(f"{stack.url}/#/runs/{old}")
    expect(page.locator(f"#run[data-run-id='{old}'][data-status='completed']")).to_be_visible()
    expect(page.locator("#decision")).to_be_visible()


# --- end to end against the backend (outcomes, per-step usage and the archive land there) ---


@pytest.fixture(scope="module")
def sim_stack(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack whose model is the LLM simulator with prices: runs spend tokens and money."""
    state = tmp_path_factory.mktemp("sim")
    fast = {"TT_LLMSIM_TTFT_S": "fixed:0.05", "TT_LLMSIM_TOKENS_PER_S": "fixed:2000"}
    with ServiceProcess("llmsim", {**fast, "TT_LLMSIM_COMPLETION_TOKENS": "fixed:60"},
                        port_var="TT_LLMSIM_PORT", log_dir=state) as sim:  # fmt: skip
        registry = state / "models.toml"
        registry.write_text(
            f'[models.sim]\nlabel = "Simulated"\nprovider = "openai"\nbase_url = "{sim.url}/v1"\n'
            'model = "sim-1"\nprompt_usd_per_m = 2.5\ncompletion_usd_per_m = 10.0\n'
        )
        with Stack(redis_url, state, TT_MODELS=str(registry)) as running:
            yield running


@pytest.fixture(scope="module")
def archiving_stack(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """History kept for ~2 s: a finished run moves to the archive within seconds."""
    state = tmp_path_factory.mktemp("archive")
    with Stack(redis_url, state, TT_HISTORY_DAYS="0.00002", TT_RETENTION_INTERVAL_S="1") as running:
        yield running


def test_a_model_run_shows_its_spend_in_history_and_against_its_budget(
    context: BrowserContext, sim_stack: Stack
) -> None:
    run_id = sim_stack.submit("TSLA", ("market",), modelId="sim", maxCostUsd=0.5)
    state = sim_stack.wait_status(run_id, {"completed"}, timeout_s=90)
    calls = state["usage"]["calls"]
    assert calls > 0
    page = context.new_page()
    page.goto(f"{sim_stack.url}/#/runs/{run_id}")
    expect(page.locator("#usage")).to_contain_text(f"{calls} LLM calls")
    expect(page.locator("#usage")).to_contain_text("of $0.50 budget")
    spend = page.locator(f"#history li[data-run-id='{run_id}'] .spend")
    expect(spend).to_contain_text(f"{calls} calls")
    expect(spend).to_contain_text("of $0.50")


def test_each_step_of_a_model_run_shows_its_own_spend(context: BrowserContext, sim_stack: Stack) -> None:
    run_id = sim_stack.submit("NVDA", ("market",), modelId="sim")
    sim_stack.wait_status(run_id, {"completed"}, timeout_s=90)
    page = context.new_page()
    page.goto(f"{sim_stack.url}/#/runs/{run_id}")
    page.click("#steps-summary")
    expect(page.locator("#steps .step[data-step='analyst:market'] .step-usage")).to_contain_text("LLM call")
    expect(page.locator("#steps .step[data-step='data_collection'] .step-usage")).to_have_count(0)


def test_history_items_carry_their_outcome_and_spend(context: BrowserContext, sim_stack: Stack) -> None:
    run_id = sim_stack.submit("AMZN", ("market",))
    sim_stack.wait_status(run_id, {"completed"}, timeout_s=90)
    listed = httpx.get(f"{sim_stack.api}/runs", params={"symbol": "AMZN"}, timeout=10).json()["runs"]
    item = next(run for run in listed if run["runId"] == run_id)
    assert "outcome" in item and "usage" in item  # null until the horizon has passed
    page = open_page(context, sim_stack, "AMZN")
    expect(page.locator(f"#history li[data-run-id='{run_id}'] .demo-tag")).to_have_text("Demo data")


def test_a_run_past_the_history_horizon_is_listed_under_older_runs(
    context: BrowserContext, archiving_stack: Stack
) -> None:
    run_id = archiving_stack.submit("ORCL", ("market",))
    archiving_stack.wait_status(run_id, {"completed"}, timeout_s=90)
    deadline = time.monotonic() + 30
    while any(
        r["runId"] == run_id for r in httpx.get(f"{archiving_stack.api}/runs", timeout=10).json()["runs"]
    ):
        assert time.monotonic() < deadline, "the run was never archived"
        time.sleep(0.5)
    archived = httpx.get(f"{archiving_stack.api}/runs", params={"archived": "true"}, timeout=10).json()[
        "runs"
    ]
    assert any(r["runId"] == run_id for r in archived)
    page = open_page(context, archiving_stack, "ORCL")
    page.click("#history-older")
    row = page.locator(f"#history-archived-list li[data-run-id='{run_id}']")
    expect(row).to_be_visible()
    row.click()
    expect(page.locator(f"#run[data-run-id='{run_id}']")).to_be_visible()
