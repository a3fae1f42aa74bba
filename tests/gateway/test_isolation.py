"""Auth on: tokens and cookie sessions, CSRF, and another user's run is invisible everywhere."""

from __future__ import annotations

import hashlib
from typing import Any

import httpx
import pytest

from services.gateway.settings import JwtSettings
from tests.gateway.conftest import GatewayFactory, RunningGateway
from tests.gateway.support import BODY, RUNS, Runner
from tests.support.jwts import SUPABASE_SECRET, supabase_token

# Each credential is a Supabase-style JWT, so one string serves both parametrizations: as an
# opaque API token (its hash in TT_API_TOKENS) and as a JWT whose ``sub`` is the user.
ALICE, BOB = (supabase_token(user, ttl_s=24 * 3600) for user in ("alice", "bob"))


def tokens() -> dict[str, str]:
    return {hashlib.sha256(t.encode()).hexdigest(): user for t, user in ((ALICE, "alice"), (BOB, "bob"))}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(params=["tokens", "jwt"])
async def secured(request: pytest.FixtureRequest, start_gateway: GatewayFactory) -> RunningGateway:
    """Every test runs with API-token users and with JWT users."""
    users: dict[str, Any] = {"api_tokens": tokens()}
    if request.param == "jwt":
        users = {"jwt": JwtSettings(secret=SUPABASE_SECRET, audience="authenticated")}
    return await start_gateway(auth=True, high_priority_users=frozenset(), **users)


async def test_requests_without_valid_credentials_are_401(secured: RunningGateway) -> None:
    async with httpx.AsyncClient(base_url=secured.url) as http:
        for headers in ({}, bearer("wrong"), {"Authorization": "Basic abc"}):
            response = await http.post(RUNS, json=BODY, headers=headers)
            assert response.status_code == 401, headers
            assert response.headers["www-authenticate"].startswith("Bearer")
            assert response.headers["content-type"] == "application/problem+json"
        assert (await http.get("/healthz")).status_code == 200


async def test_another_users_run_is_404_everywhere_and_never_listed(
    secured: RunningGateway, runner: Runner
) -> None:
    async with httpx.AsyncClient(base_url=secured.url, timeout=10) as http:
        posted = await http.post(RUNS, json=BODY, headers=bearer(ALICE))
        assert posted.status_code == 202
        run_id = posted.json()["runId"]
        assert (await http.get(f"{RUNS}/{run_id}", headers=bearer(ALICE))).status_code == 200
        as_bob = bearer(BOB)
        for method, path, params in (
            ("GET", f"{RUNS}/{run_id}", {}),
            ("GET", f"{RUNS}/{run_id}", {"wait": "0.2"}),
            ("POST", f"{RUNS}/{run_id}/wait", {"timeout": "0.2"}),
            ("GET", f"{RUNS}/{run_id}/events", {}),
            ("DELETE", f"{RUNS}/{run_id}", {}),
            ("GET", f"/api/trading/decision/runs/{run_id}", {}),
            ("GET", f"/api/trading/progress/{run_id}", {}),
            ("POST", f"/api/trading/cancel/{run_id}", {}),
        ):
            response = await http.request(method, path, params=params, headers=as_bob)
            assert response.status_code == 404, (method, path, response.text)
        state = (await http.get(f"{RUNS}/{run_id}", headers=bearer(ALICE))).json()
        assert state["status"] == "pending" and not state["cancelRequested"]


async def test_cookie_session_needs_csrf_on_unsafe_methods(secured: RunningGateway) -> None:
    async with httpx.AsyncClient(base_url=secured.url, timeout=10) as http:
        bad = await http.post("/api/trading/session", json={"token": "nope"})
        assert bad.status_code == 401 and bad.json()["field"] == "token"
        signed = await http.post("/api/trading/session", json={"token": ALICE})
        assert signed.status_code == 200
        csrf = signed.json()["csrfToken"]
        cookie = signed.headers.get_list("set-cookie")
        assert any("tt_session=" in c and "HttpOnly" in c and "SameSite=strict" in c for c in cookie)
        assert (await http.get("/api/trading/session")).json()["userId"] == "alice"
        no_token = await http.post(RUNS, json=BODY)
        assert no_token.status_code == 403
        foreign = await http.post(
            RUNS, json=BODY, headers={"X-CSRF-Token": csrf, "Origin": "https://evil.example"}
        )
        assert foreign.status_code == 403
        ok = await http.post(RUNS, json=BODY, headers={"X-CSRF-Token": csrf, "Origin": secured.url})
        assert ok.status_code == 202
        run_id = ok.json()["runId"]
        async with http.stream("GET", f"{RUNS}/{run_id}/events") as events:  # EventSource: cookie only
            assert events.status_code == 200
        assert (await http.get(f"{RUNS}/{run_id}")).status_code == 200
        http.cookies.set("tt_session", "forged.1.x.y")
        assert (await http.get(f"{RUNS}/{run_id}")).status_code == 401


async def test_auth_off_means_everything_is_local(client: httpx.AsyncClient) -> None:
    session = await client.get("/api/trading/session")
    assert session.json() == {"userId": "local", "authEnabled": False, "via": "anonymous", "csrfToken": None}
