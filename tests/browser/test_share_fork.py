"""Issue 19 on the page: join instead of duplicate, share links viewed live and revoked, forks as a
tree, and two runs side by side from their diff."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlparse

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.browser.conftest import DESKTOP, PHONE, Shoot
from tests.browser.test_ui import open_page, start_run, wait_percent
from tests.e2e.stack import Stack
from tests.support.jwts import SUPABASE_SECRET, supabase_token

pytestmark = pytest.mark.browser


def runs_of(stack: Stack, symbol: str) -> list[str]:
    page = httpx.get(f"{stack.api}/runs", params={"symbol": symbol, "limit": 100}, timeout=10.0).json()
    return [run["runId"] for run in page["runs"]]


def test_two_identical_submits_give_one_run_and_the_page_says_so(
    context: BrowserContext, stack: Stack, shoot: Shoot
) -> None:
    page = open_page(context, stack, "AMD")
    first = start_run(page)
    expect(page.locator("#run-notice")).to_be_hidden()  # a new run: nothing to say
    page.locator("#submit").scroll_into_view_if_needed()
    page.click("#submit")  # the same request again, with a new Idempotency-Key

    notice = page.locator("#run-notice")
    expect(notice).to_contain_text("Already running — showing that run")
    expect(notice).to_be_in_viewport()  # on the run card, where the view went
    expect(page.locator(f"#run[data-run-id='{first}']")).to_be_visible()
    expect(page).to_have_url(f"{stack.url}/#/runs/{first}")
    assert runs_of(stack, "AMD") == [first]
    shoot(page, "joined")


def test_a_share_link_shows_the_run_live_alone_and_stops_when_revoked(
    browser: Browser, context: BrowserContext, stack: Stack, shoot: Shoot
) -> None:
    owner = open_page(context, stack, "ADBE")
    for box in owner.locator("#analysts input").all():
        box.check()  # every analyst: a run long enough to watch, then revoke, while it runs
    run_id = start_run(owner)
    owner.click("#share-open")
    expect(owner.locator("#share-list li")).to_have_count(0)
    owner.select_option("#share-expiry", "3600")
    owner.click("#share-create")
    link = owner.locator("#share-url").input_value()
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=stack.url)
    owner.click("#share-copy")
    expect(owner.locator("#share-copied")).to_have_text("Copied.")
    assert owner.evaluate("navigator.clipboard.readText()") == link
    assert urlparse(link).path.startswith(f"/shared/{run_id}.")
    expect(owner.locator("#share-list li")).to_have_count(1)
    expect(owner.locator("#share-list li")).to_contain_text("expires")

    viewer_context = browser.new_context(viewport=PHONE)  # no sign-in, no localStorage
    asked: list[str] = []
    try:
        viewer = viewer_context.new_page()
        viewer.on("request", lambda r: asked.append(urlparse(r.url).path))
        viewer.goto(link)
        expect(viewer.locator(f"#run[data-run-id='{run_id}']")).to_be_visible()
        expect(viewer.locator("#connection")).to_have_attribute("data-mode", "live")
        for absent in ("#run-form", "#history", "#active-strip", "#share-open", "#cancel"):
            expect(viewer.locator(absent)).not_to_be_visible()
        before = int(viewer.locator("#percent").inner_text().rstrip("%"))
        wait_percent(viewer, before + 10)  # live: the stream moves the bar
        shoot(viewer, "viewer-live", sizes=False)  # quick: the run must still be going at the revoke

        assert viewer.locator("#run").get_attribute("data-status") == "running"
        owner.locator("#share-list li button", has_text="Revoke").click()
        expect(owner.locator("#share-list li")).to_have_count(0)
        banner = viewer.locator("#shared-banner")
        expect(banner).to_have_text("The owner revoked this share link. The page no longer updates.")
        expect(viewer.locator("#run")).to_be_hidden()
        expect(viewer.locator("#connection")).to_be_hidden()
        shoot(viewer, "viewer-revoked")
        shoot(owner, "owner-share-panel")
        api = [p for p in asked if p.startswith("/api/")]
        assert api and all(p.startswith("/api/trading/shared/") for p in api), asked
    finally:
        viewer_context.close()


def finished(stack: Stack, symbol: str, analysts: tuple[str, ...] = ("market",)) -> str:
    run_id = stack.submit(symbol, analysts)
    stack.wait_status(run_id, {"completed"})
    return run_id


def test_the_share_panel_lists_links_with_their_expiry_and_fits_a_phone(
    context: BrowserContext, stack: Stack, shoot: Shoot
) -> None:
    run_id = finished(stack, "SNPS")
    page = context.new_page()
    page.set_viewport_size(PHONE)
    page.goto(f"{stack.url}/#/runs/{run_id}")
    expect(page.locator(f"#run[data-run-id='{run_id}'][data-status='completed']")).to_be_visible()
    page.click("#share-open")
    page.select_option("#share-expiry", "")  # until revoked
    page.click("#share-create")
    expect(page.locator("#share-list li")).to_have_count(1)
    expect(page.locator("#share-list li")).to_contain_text("no expiry")
    expect(page.locator("#share-copied")).to_contain_text("Works until you revoke it")
    page.select_option("#share-expiry", "604800")
    page.click("#share-create")
    expect(page.locator("#share-list li")).to_have_count(2)
    page.locator("#share-panel").scroll_into_view_if_needed()
    shoot(page, "share-panel")
    page.click("#share-open")  # closes it
    expect(page.locator("#share-panel")).to_be_hidden()


def fork_from_page(page: Page, step: str, debate_rounds: str) -> None:
    page.click("#fork-open")
    form = page.locator("#fork-form")
    expect(form).to_be_visible()
    form.locator("#fork-step").select_option(step)
    form.locator("input[name=debateRounds]").fill(debate_rounds)
    page.click("#fork-submit")


def test_a_fork_shows_its_parent_the_family_tree_and_the_diff_side_by_side(
    context: BrowserContext, stack: Stack, shoot: Shoot
) -> None:
    source = finished(stack, "QCOM")
    page = context.new_page()
    page.goto(f"{stack.url}/#/runs/{source}")
    expect(page.locator(f"#run[data-run-id='{source}'][data-status='completed']")).to_be_visible()
    expect(page.locator("#fork-family")).to_be_hidden()  # no parent, no forks yet
    page.click("#fork-open")
    steps = page.locator("#fork-step option")
    expect(steps).to_have_count(len(stack.run(source)["steps"]))
    shoot(page, "fork-form")
    page.click("#fork-open")  # closes it
    fork_from_page(page, "research_debate", "2")

    page.wait_for_url(lambda url: "/#/runs/" in url and source not in url)
    fork = page.url.rsplit("/", 1)[1]
    expect(page.locator(f"#run[data-run-id='{fork}']")).to_be_visible()
    expect(page.locator("#run-notice")).to_contain_text("2 steps reused")
    expect(page.locator("#fork-parent")).to_contain_text(f"Forked from {source[-6:]} at Bull/bear debate")
    stack.wait_status(fork, {"completed"})
    expect(page.locator(f"#run[data-run-id='{fork}'][data-status='completed']")).to_be_visible()
    tree = page.locator("#fork-tree")
    expect(tree.locator(f"li[data-run-id='{source}'] li[data-run-id='{fork}']")).to_be_visible()
    expect(tree.locator(f"li[data-run-id='{fork}'] .status-pill")).to_have_text("completed")
    expect(tree.locator(f"li[data-run-id='{fork}'] .mini-badge")).not_to_have_text("—")
    expect(tree.locator(f"li[data-run-id='{fork}'] small")).to_contain_text("debate rounds 2")
    shoot(page, "fork-tree")

    page.click("#diff-parent")
    table = page.locator("#compare table.diff")
    expect(table).to_be_in_viewport()
    expect(page).to_have_url(f"{stack.url}/#/diff/{source},{fork}")
    expect(table.locator("tr[data-key='options.debateRounds']")).to_have_attribute("data-differs", "true")
    expect(table.locator("tr[data-key='options.debateRounds'] td")).to_have_text(["1", "2"])
    expect(table.locator("tr[data-key='modelId']")).not_to_have_attribute("data-differs", "true")
    expect(table.locator("tr[data-key='symbol'] td")).to_have_text(["QCOM", "QCOM"])
    expect(table.locator("tbody tr").first).to_have_attribute("data-key", "decision")  # outcome first
    expect(table.locator("tr[data-key='options.deadlineS']")).to_have_count(0)  # empty in both
    shoot(page, "diff")

    page.locator(f"#fork-tree li[data-run-id='{source}'] > .fork-node > a").click()  # up to the parent
    expect(page.locator(f"#run[data-run-id='{source}']")).to_be_visible()
    expect(page.locator(f"#fork-tree li[data-run-id='{source}'] > .fork-node > a")).to_have_attribute(
        "aria-current", "true"
    )
    expect(page.locator("#fork-parent")).to_have_count(0)


def test_a_comparison_of_two_runs_links_to_their_diff(
    context: BrowserContext, stack: Stack, shoot: Shoot
) -> None:
    first = finished(stack, "TXN")
    second = finished(stack, "TXN", ("market", "risk"))
    page = context.new_page()
    page.set_viewport_size(DESKTOP)
    page.goto(f"{stack.url}/#/compare/{first},{second}")
    page.click("#compare-diff")
    expect(page).to_have_url(f"{stack.url}/#/diff/{first},{second}")
    analysts = page.locator("#compare table.diff tr[data-key='analysts']")
    expect(analysts).to_have_attribute("data-differs", "true")
    expect(page.locator("#compare table.diff tr[data-key='analysts.risk.signal'] td").first).to_have_text("—")
    page.click("#compare-close")
    expect(page.locator("#compare")).to_be_hidden()
    shoot(page, "diff-closed", sizes=False)


@pytest.fixture(scope="module")
def signed_stack(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Sign-in required: the share link's page must work without it."""
    with Stack(
        redis_url,
        tmp_path_factory.mktemp("signed-stack"),
        step_delay_s=1.2,
        TT_AUTH="jwt",
        TT_JWT_SECRET=SUPABASE_SECRET,
        TT_JWT_AUDIENCE="authenticated",
    ) as running:
        yield running


def test_a_share_link_needs_no_sign_in_where_the_page_does(
    browser: Browser, signed_stack: Stack, shoot: Shoot
) -> None:
    owner = {"Authorization": f"Bearer {supabase_token('0a2c7e1f-share-owner', ttl_s=600)}"}
    body = {"symbol": "INTU", "analysts": ["market", "fundamentals", "risk"], "join": False}
    with httpx.Client(base_url=signed_stack.api, headers=owner, timeout=10.0) as api:
        run_id = api.post("/runs", json=body).json()["runId"]
        made = api.post(f"/runs/{run_id}/shares", json={}).json()
    stranger = browser.new_context(viewport=DESKTOP)
    try:
        page = stranger.new_page()
        page.goto(f"{signed_stack.url}{made['pageUrl']}")
        expect(page.locator(f"#run[data-run-id='{run_id}']")).to_be_visible()
        page.wait_for_function("(window.tickertape.attachment?.received?.length ?? 0) > 1")  # SSE
        shoot(page, "stranger")
        page.goto(f"{signed_stack.url}/#INTU")  # the app itself still asks this browser to sign in
        expect(page.locator("#sign-in")).to_be_visible()
    finally:
        stranger.close()
