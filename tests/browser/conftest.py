"""Playwright against the real stack, driving Debian's Chromium (never a downloaded browser)."""

from __future__ import annotations

import os
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
ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "test-output" / "screenshots"
README_IMAGES = ROOT / "docs" / "img"
"""``TT_README_SHOTS=1 pytest tests/browser`` also writes the README's screenshots there."""
DESKTOP = {"width": 1280, "height": 700}
PHONE = {"width": 390, "height": 844}

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
    ctx = browser.new_context(viewport=DESKTOP)
    ctx.set_default_timeout(20_000)
    try:
        yield ctx
    finally:
        ctx.close()


Shoot = Callable[..., Path]


def sideways_overflow(page: Page) -> int:
    """How many CSS pixels the page is wider than the window (0 when nothing slides sideways)."""
    extra: int = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    return extra


def assert_no_overflow(page: Page, where: str) -> None:
    extra = sideways_overflow(page)
    if extra > 0:
        culprits = page.evaluate(
            """() => [...document.querySelectorAll('body *')]
                .filter((el) => el.getBoundingClientRect().right > window.innerWidth + 0.5)
                .slice(0, 5).map((el) => el.tagName + (el.id ? '#' + el.id : '') + '.' + el.className)"""
        )
        raise AssertionError(f"{where}: page is {extra}px wider than the window; widest: {culprits}")


def readme_shot(page: Page, name: str, element: str | None = None) -> None:
    """Under ``TT_README_SHOTS=1``, write docs/img/<name>.png: the window from the top of the
    page, or the whole of one ``element`` (a note taller than any window)."""
    if os.environ.get("TT_README_SHOTS") != "1":
        return
    path = str(README_IMAGES / f"{name}.png")
    if element:
        page.locator(element).screenshot(path=path)
        return
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=path)


@pytest.fixture
def shoot(request: pytest.FixtureRequest) -> Shoot:
    """``shoot(page, "state")``: full-page screenshots at the current size, then (unless
    ``sizes=False``) at phone and desktop size too, failing when the page overflows sideways at
    any of them. ``readme="running"`` also writes docs/img/running.png under TT_README_SHOTS=1."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    test = request.node.name.replace("[", "-").replace("]", "")

    def save(page: Page, state: str, *, sizes: bool = True, readme: str | None = None) -> Path:
        path = SCREENSHOTS / f"{test}--{state}.png"
        assert_no_overflow(page, state)
        page.screenshot(path=str(path), full_page=True)
        original = page.viewport_size
        if sizes and original:
            for name, size in (("phone", PHONE), ("desktop", DESKTOP)):
                if size == original:
                    continue
                page.set_viewport_size(size)
                assert_no_overflow(page, f"{state} at {name} size")
                page.screenshot(path=str(SCREENSHOTS / f"{test}--{state}--{name}.png"), full_page=True)
            page.set_viewport_size(original)
        if readme:
            readme_shot(page, readme)  # the README shows the page as it opens
        return path

    return save
