"""What a picky user checks: feedback where the eye is, a URL per run, numbers that agree, a phone."""

from __future__ import annotations

import pytest
from playwright.sync_api import BrowserContext, expect

from tests.browser.conftest import PHONE, Shoot, assert_no_overflow
from tests.browser.test_ui import open_page, shown_percent, start_run, wait_percent
from tests.e2e.stack import Stack

pytestmark = pytest.mark.browser


def test_on_a_phone_start_shows_the_run_and_cancel_keeps_what_was_done(
    context: BrowserContext, stack: Stack, shoot: Shoot
) -> None:
    page = open_page(context, stack, "NFLX")
    page.set_viewport_size(PHONE)
    page.locator("#submit").scroll_into_view_if_needed()
    run_id = start_run(page)

    expect(page).to_have_url(f"{stack.url}/#/runs/{run_id}")
    expect(page.locator("#run-symbol")).to_be_in_viewport()  # the eye is taken to the new run
    expect(page.locator("#cancel")).to_be_in_viewport()
    expect(page.locator("#usage")).to_contain_text("no cost")
    wait_percent(page, 20)
    assert_no_overflow(page, "running on a phone")
    shoot(page, "running", sizes=False)

    before = page.evaluate("[window.scrollX, window.scrollY]")
    page.click("#cancel")
    expect(page.locator("#confirm-cancel")).to_be_visible()
    assert page.evaluate("[window.scrollX, window.scrollY]") == before  # the page did not slide
    assert_no_overflow(page, "cancel dialog on a phone")
    shoot(page, "confirm", sizes=False)
    shown = shown_percent(page)
    page.click("#confirm-cancel-yes")

    expect(page.locator("#run-status")).to_have_attribute("data-status", "cancelled", timeout=10_000)
    assert shown_percent(page) >= shown > 0  # the bar stays where it was
    done = page.locator("#steps .step[data-status='completed'] .detail")
    expect(done.first).to_be_visible()  # the reports finished before the cancel are still shown
    expect(page.locator("#steps-box")).to_have_attribute("open", "")
    shoot(page, "cancelled")


def test_a_finished_run_has_its_own_url_leads_with_the_decision_and_back_works(
    context: BrowserContext, stack: Stack, shoot: Shoot
) -> None:
    first = stack.submit("ORCL", ("market",))
    second = stack.submit("ORCL", ("market", "risk"))
    for run_id in (first, second):
        stack.wait_status(run_id, {"completed"})

    page = context.new_page()
    page.goto(f"{stack.url}/#/runs/{first}")  # as a bookmark, a reload or the CLI's link opens it
    expect(page.locator(f"#run[data-run-id='{first}']")).to_be_visible()
    expect(page.locator("#decision")).to_be_in_viewport()
    decision_y = page.locator("#result").bounding_box()
    steps_y = page.locator("#run").bounding_box()
    assert decision_y and steps_y and decision_y["y"] < steps_y["y"]  # the decision comes first
    expect(page.locator("#steps-box")).not_to_have_attribute("open", "")  # steps folded below
    expect(page.locator("#history-ticker")).to_have_text("ORCL")
    page.click("#export summary")
    with page.expect_download() as download:
        page.click("#export-json")
    assert download.value.suggested_filename == f"tickertape-ORCL-{first}.json"
    shoot(page, "opened-by-url")

    page.locator(f"#history li[data-run-id='{second}']").click()
    expect(page).to_have_url(f"{stack.url}/#/runs/{second}")
    expect(page.locator(f"#run[data-run-id='{second}']")).to_be_visible()
    page.go_back()
    expect(page).to_have_url(f"{stack.url}/#/runs/{first}")
    expect(page.locator(f"#run[data-run-id='{first}']")).to_be_visible()
    page.reload()
    expect(page.locator(f"#run[data-run-id='{first}'][data-status='completed']")).to_be_visible()


def test_two_runs_side_by_side_with_what_differs_highlighted(
    context: BrowserContext, stack: Stack, shoot: Shoot
) -> None:
    first = stack.submit("CSCO", ("market",))
    second = stack.submit("CSCO", ("market", "risk"))
    for run_id in (first, second):
        stack.wait_status(run_id, {"completed"})
    page = open_page(context, stack, "CSCO")
    page.set_viewport_size(PHONE)

    for run_id in (first, second):
        page.locator(f"#history li[data-run-id='{run_id}'] input.pick").check()
    expect(page).to_have_url(f"{stack.url}/#CSCO")  # ticking is not opening
    page.click("#compare-picked")

    table = page.locator("#compare table.compare")
    expect(table).to_be_in_viewport()
    expect(page).to_have_url(f"{stack.url}/#/compare/{first},{second}")
    expect(table.locator("thead th")).to_have_count(3)
    analysts = table.locator("tbody tr", has=page.locator("th", has_text="Analysts"))
    expect(analysts).to_have_attribute("data-differs", "true")
    model = table.locator("tbody tr", has=page.locator("th", has_text="Model"))
    expect(model).not_to_have_attribute("data-differs", "true")
    shoot(page, "compare")

    page.reload()  # the comparison has its own address too
    expect(page.locator("#compare table.compare thead th")).to_have_count(3)


def test_history_and_running_now_agree_with_the_run_view_while_it_runs(
    context: BrowserContext, stack: Stack
) -> None:
    page = open_page(context, stack, "INTC")
    run_id = start_run(page)
    expect(page.locator(f"#history li[data-run-id='{run_id}']")).to_be_visible()
    expect(page.locator(f"#active-list [data-run-id='{run_id}']")).to_be_visible()
    seen: list[int] = []
    for at_least in (15, 30, 50, 70):
        wait_percent(page, at_least)
        live, row, chip = page.evaluate(  # in one go: an update may land between two reads
            """(id) => [document.querySelector('#percent').textContent,
                document.querySelector(`#history li[data-run-id="${id}"] .mini-badge`).textContent,
                document.querySelector(`#active-list [data-run-id="${id}"] .pct`).textContent]
                .map((t) => parseInt(t.match(/(\\d+)%/)[1]))""",
            run_id,
        )
        assert row == live == chip, (row, live, chip)
        seen.append(live)
    assert seen == sorted(seen)
    expect(page.locator(f"#history li[data-run-id='{run_id}'] .mini-badge")).not_to_contain_text(
        "%", timeout=60_000
    )  # and the row turns into the decision when the run ends
