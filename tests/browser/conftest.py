"""Playwright against the real stack, driving Debian's Chromium (never a downloaded browser)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

from tests.e2e.stack import Stack

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-output" / "screenshots"

MISSING = "browser tests need /usr/bin/chromium: run `make system-deps` (deploy/local/install-system-deps.sh)"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Skip (with the reason) only when the system's Chromium is absent."""
    if CHROMIUM.exists():
        return
    for item in items:
        if item.get_closest_marker("browser"):
            item.add_marker(pytest.mark.skip(reason=MISSING))


@pytest.fixture(scope="module")
def stack(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Paced so a run lasts ~10 s: long enough to leave, reload and come back while it runs."""
    with Stack(
        redis_url, tmp_path_factory.mktemp("stack"), step_delay_s=1.2, TT_MAX_ACTIVE_RUNS="3"
    ) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    """A fresh browser profile (its own localStorage) per test; its tabs share it."""
    ctx = browser.new_context(viewport={"width": 1200, "height": 900})
    ctx.set_default_timeout(20_000)
    try:
        yield ctx
    finally:
        ctx.close()


Shoot = Callable[[Page, str], Path]


@pytest.fixture
def shoot(request: pytest.FixtureRequest) -> Shoot:
    """``shoot(page, "state")`` saves a full-page screenshot under test-output/screenshots/."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    test = request.node.name.replace("[", "-").replace("]", "")

    def save(page: Page, state: str) -> Path:
        path = SCREENSHOTS / f"{test}--{state}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return save
