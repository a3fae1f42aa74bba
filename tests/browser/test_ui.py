"""The page in a real browser against the real stack: leave and return, cancel, tabs, a gateway crash."""

from __future__ import annotations

import re
import time
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect
from redis import Redis

from tests.browser.conftest import PHONE, Shoot, readme_shot
from tests.e2e.stack import Stack

pytestmark = pytest.mark.browser


def open_page(context: BrowserContext, stack: Stack, ticker: str) -> Page:
    page = context.new_page()
    page.goto(f"{stack.url}/#{ticker}")
    expect(page.locator("#analysts input").first).to_be_visible()
    return page


def start_run(page: Page) -> str:
    page.click("#submit")
    run = page.locator("#run")
    expect(run).to_be_visible()
    run_id = run.get_attribute("data-run-id")
    assert run_id
    return run_id


def shown_percent(page: Page) -> int:
    return int(page.locator("#percent").inner_text().rstrip("%"))


def wait_percent(page: Page, at_least: int) -> None:
    page.wait_for_function(f"parseInt(document.querySelector('#percent').textContent) >= {at_least}")


def go_to_ticker(page: Page, ticker: str) -> None:
    """What a person does: type another ticker and leave the field."""
    page.fill("#ticker", ticker)
    page.press("#ticker", "Tab")
    expect(page.locator("#history-ticker")).to_have_text(ticker)


def expect_attached(page: Page, run_id: str, not_below: float) -> None:
    """The run is shown again at (at least) the progress it had: restored, not restarted from zero."""
    expect(page.locator(f"#run[data-run-id='{run_id}']")).to_be_visible()
    assert shown_percent(page) >= int(not_below) > 0


def remembered(page: Page) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = page.evaluate(
        "JSON.parse(localStorage.getItem('tickertape.activeRuns') || '[]')"
    )
    return entries


def received(page: Page) -> list[str]:
    ids: list[str] = page.evaluate("window.tickertape.page.attachment?.received ?? []")
    return ids


def stream_ids(stack: Stack, run_id: str) -> list[str]:
    with Redis.from_url(stack.env["REDIS_URL"], decode_responses=True) as redis:
        return [entry_id for entry_id, _ in redis.xrange(stack.keys.run(run_id))]


def test_leave_reload_and_return_pick_the_run_up_where_it_is(
    context: BrowserContext, stack: Stack, shoot: Shoot
) -> None:
    page = open_page(context, stack, "AAPL")
    for analyst in page.locator("#analysts input").all():
        analyst.check()  # the whole desk: the README shows it, and its steps outlast the shots below
    run_id = start_run(page)
    wait_percent(page, 15)
    shoot(page, "running", readme="running")

    go_to_ticker(page, "MSFT")
    expect(page.locator("#run")).to_be_hidden()
    shoot(page, "other-ticker")
    go_to_ticker(page, "AAPL")
    expect_attached(page, run_id, stack.run(run_id)["progress"])

    progress = stack.run(run_id)["progress"]
    page.reload()
    expect_attached(page, run_id, progress)
    shoot(page, "reloaded")

    memory = next(entry for entry in remembered(page) if entry["runId"] == run_id)
    assert memory["ticker"] == "AAPL" and memory["lastEventId"]
    progress = stack.run(run_id)["progress"]
    page.close()
    page = open_page(context, stack, "AAPL")
    expect_attached(page, run_id, progress)
    first_event = stream_ids(stack, run_id)[0]
    assert first_event not in received(page)  # resumed after the remembered ID, not replayed from 0

    expect(page.locator("#decision")).to_be_visible(timeout=60_000)
    expect(page.locator("#run-status")).to_have_attribute("data-status", "completed")
    expect(page.locator("#demo-label")).to_be_visible()
    expect(page.locator("#result svg.chart")).to_be_visible()
    expect(page.locator(f"#history li[data-run-id='{run_id}']")).to_be_visible()
    assert all(entry["runId"] != run_id for entry in remembered(page))
    shoot(page, "finished", readme="finished")
    chart = page.locator("#result svg.chart")
    expect(chart).to_have_attribute("viewBox", re.compile(r"^0 0 640 "))  # redrawn for the desktop again
    page.locator("#risk-debate summary").click()  # the README's whole note shows the risk debate open
    expect(page.locator("#risk-debate .body")).to_be_visible()
    readme_shot(page, "desk", element="#result")
    page.set_viewport_size(PHONE)
    expect(chart).to_have_attribute("viewBox", re.compile(r"^0 0 360 "))  # the phone's redraw…
    expect(page.locator("#risk-debate")).to_have_attribute("open", "")  # …keeps what the reader opened
    page.evaluate("window.scrollTo(0, 0)")
    expect(page.locator("#decision")).to_be_in_viewport()  # a phone, too, opens on the decision
    readme_shot(page, "phone")


def test_cancel_from_the_page_shows_cancelled_promptly(
    context: BrowserContext, stack: Stack, shoot: Shoot
) -> None:
    page = open_page(context, stack, "NVDA")
    page.set_viewport_size({"width": 390, "height": 844})  # a phone
    run_id = start_run(page)
    wait_percent(page, 10)

    page.click("#cancel")
    expect(page.locator("#confirm-cancel")).to_be_visible()
    shoot(page, "confirm")
    page.click("#confirm-cancel-yes")

    expect(page.locator("#run-status")).to_have_attribute("data-status", "cancelled", timeout=10_000)
    assert stack.run(run_id)["status"] == "cancelled"
    expect(page.locator("#cancel")).to_be_hidden()
    shoot(page, "cancelled")


def test_a_second_tab_and_another_browser_see_the_same_run(
    context: BrowserContext, browser: Browser, stack: Stack, shoot: Shoot
) -> None:
    first = open_page(context, stack, "TSLA")
    run_id = start_run(first)

    second = open_page(context, stack, "TSLA")
    expect(second.locator(f"#run[data-run-id='{run_id}']")).to_be_visible()
    elsewhere = browser.new_context()
    try:
        other = open_page(elsewhere, stack, "TSLA")  # no localStorage: found through the server
        expect(other.locator(f"#run[data-run-id='{run_id}']")).to_be_visible()
        expect(other.locator("#active-list [data-run-id]").first).to_be_visible()
        for page in (first, second, other):
            expect(page.locator("#decision")).to_be_visible(timeout=60_000)
        shoot(second, "second-tab-finished")
    finally:
        elsewhere.close()


def test_errors_are_said_in_words_a_person_understands(
    context: BrowserContext, stack: Stack, shoot: Shoot
) -> None:
    page = open_page(context, stack, "META")
    page.fill("#ticker", "ME$A")
    expect(page.locator("#ticker")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#ticker-hint")).to_contain_text("Only letters, digits")
    page.fill("#ticker", "META")

    others = [stack.submit("META", ("market",)) for _ in range(3)]  # the per-user cap (3) is reached
    try:
        page.click("#submit")
        said = page.locator("#form-status")  # beside the button that was pressed, announced
        expect(said).to_contain_text("too many analyses running")
        expect(said).to_have_attribute("role", "status")
        expect(said).to_be_in_viewport()
        expect(page.locator("#notice")).to_be_hidden()
        shoot(page, "cap-reached")
    finally:
        for run_id in others:
            httpx.delete(f"{stack.api}/runs/{run_id}", timeout=10.0)
        for run_id in others:
            stack.wait_status(run_id, {"cancelled", "completed"})


def test_the_page_reconnects_after_a_gateway_crash_and_misses_no_step(
    context: BrowserContext, stack: Stack, shoot: Shoot
) -> None:
    page = open_page(context, stack, "AMZN")
    run_id = start_run(page)
    wait_percent(page, 15)

    stack.gateway.kill()
    expect(page.locator("#connection")).not_to_have_attribute("data-mode", "live", timeout=10_000)
    shoot(page, "gateway-down")
    time.sleep(1.0)
    stack.restart_gateway()

    expect(page.locator("#decision")).to_be_visible(timeout=60_000)
    assert received(page) == stream_ids(stack, run_id)
    statuses = page.locator("#steps .step").evaluate_all("els => els.map(e => e.dataset.status)")
    assert statuses and set(statuses) == {"completed"}
    shoot(page, "after-reconnect")
