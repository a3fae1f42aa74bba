"""A host app hands its user's JWT to the page as ``?token=``: the page strips it from the address
bar, trades it for the HttpOnly session cookie, and follows runs over SSE with that cookie."""

from __future__ import annotations

from collections.abc import Iterator

import jwt
import pytest
from playwright.sync_api import BrowserContext, expect

from tests.e2e.stack import Stack
from tests.support.jwts import SUPABASE_SECRET, supabase_token

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def jwt_stack(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with Stack(
        redis_url,
        tmp_path_factory.mktemp("jwt-stack"),
        step_delay_s=0.2,
        TT_AUTH="jwt",
        TT_JWT_SECRET=SUPABASE_SECRET,
        TT_JWT_AUDIENCE="authenticated",
    ) as running:
        yield running


def test_a_token_hand_off_signs_in_strips_the_url_and_streams_with_the_cookie(
    jwt_stack: Stack, context: BrowserContext
) -> None:
    token = supabase_token("8f14e45f-ceea-467a-9575-0b0a9d1e3c6a", ttl_s=600)
    page = context.new_page()
    page.goto(f"{jwt_stack.url}/?token={token}#AAPL")
    expect(page.locator("#analysts input").first).to_be_visible()
    assert "token" not in page.url and token not in page.url
    expect(page.locator("#sign-in")).not_to_be_visible()
    session = next(c for c in context.cookies() if c["name"] == "tt_session")
    assert session["httpOnly"]
    exp = jwt.decode(token, options={"verify_signature": False})["exp"]
    assert 0 < session["expires"] <= exp + 1
    page.click("#submit")
    expect(page.locator("#run")).to_be_visible()
    page.wait_for_function("parseInt(document.querySelector('#percent').textContent) > 0")
    assert page.evaluate("window.tickertape.page.attachment?.received?.length ?? 0") > 0  # SSE frames


def test_a_refused_hand_off_opens_the_sign_in_dialog_saying_why(
    jwt_stack: Stack, context: BrowserContext
) -> None:
    page = context.new_page()
    page.goto(f"{jwt_stack.url}/?token={supabase_token('someone', ttl_s=-600)}#AAPL")
    expect(page.locator("#sign-in")).to_be_visible()
    expect(page.locator("#sign-in-error")).to_contain_text("expired")
    assert "token=" not in page.url
    page.fill("#sign-in-token", supabase_token("someone", ttl_s=600))
    page.click("#sign-in-submit")
    expect(page.locator("#sign-in")).not_to_be_visible()
    expect(page.locator("#analysts input").first).to_be_visible()
