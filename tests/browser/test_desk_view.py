"""The finished desk as a reader sees it: the model picker's honest choices, the demo label on a
made-up ticker, the risk debate and the price target."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import BrowserContext, expect

from tests.browser.conftest import Shoot
from tests.e2e.stack import Stack

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]
ABSENT = "TT_BROWSER_TEST_ABSENT_KEY"


@pytest.fixture(scope="module")
def desk_stack(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    state = tmp_path_factory.mktemp("desk")
    registry = state / "models.toml"
    registry.write_text(
        '[models.needs-key]\nlabel = "Needs a key"\nprovider = "openai"\n'
        f'base_url = "https://example.invalid/v1"\nmodel = "m"\napi_key_env = "{ABSENT}"\n'
    )
    with Stack(redis_url, state, TT_MODELS=str(registry)) as running:
        yield running


def test_the_page_marks_unavailable_models_and_shows_the_whole_desk(
    context: BrowserContext, desk_stack: Stack, shoot: Shoot
) -> None:
    page = context.new_page()
    page.goto(f"{desk_stack.url}/#ZZZZ9")
    option = page.locator("#model option[value='needs-key']")
    expect(option).to_be_disabled()
    expect(option).to_contain_text(ABSENT)
    expect(page.locator("#model option[value='offline']")).to_be_enabled()
    page.click("#submit")
    result = page.locator("#result")
    expect(result).to_be_visible(timeout=60_000)
    expect(page.locator("#demo-label")).to_contain_text("no real market: illustration only")
    expect(page.locator("#risk-debate")).to_be_visible()
    expect(result).to_contain_text("Price target")
    shoot(page, "finished")
