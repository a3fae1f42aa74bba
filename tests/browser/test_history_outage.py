"""The history panel while every projector is away: it says so in words, retries by itself, recovers."""

from __future__ import annotations

import httpx
import pytest
from playwright.sync_api import BrowserContext, expect

from tests.browser.conftest import Shoot
from tests.e2e.stack import Stack
from tests.support.processes import ServiceProcess

pytestmark = pytest.mark.browser

UNAVAILABLE = "History is briefly unavailable — retrying…"


def test_history_says_it_is_briefly_unavailable_and_comes_back_by_itself(
    context: BrowserContext, stack: Stack, shoot: Shoot
) -> None:
    run_id = stack.submit("NFLX", ("market",))
    httpx.delete(f"{stack.api}/runs/{run_id}", timeout=10.0)  # ended: nothing live reloads history
    stack.wait_status(run_id, {"cancelled"})
    page = context.new_page()
    page.goto(f"{stack.url}/#NFLX")
    expect(page.locator(f"#history li[data-run-id='{run_id}']")).to_be_visible()

    stack.projector.kill()
    page.reload()
    expect(page.locator("#history [data-state='retrying']")).to_have_text(UNAVAILABLE)
    expect(page.locator("#notice")).to_be_hidden()  # the panel says it; no error notice on top
    expect(page.locator("#analysts input").first).to_be_visible()  # the rest of the page works
    shoot(page, "history-unavailable")

    stack.projector = ServiceProcess("projector", stack.env, port=stack.projector.port, log_dir=stack.log_dir)
    stack.projector.start(timeout_s=30.0)
    expect(page.locator(f"#history li[data-run-id='{run_id}']")).to_be_visible(timeout=15_000)
    expect(page.locator("#history [data-state='retrying']")).to_have_count(0)
    shoot(page, "history-back")
