"""TT_AUTH=jwt with a shared secret: Supabase's tokens as Supabase mints them, every refusal a 401
problem naming the reason (never the token), roles from a claim path, the cookie exchange."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest
from redis.asyncio import Redis

from services.gateway.settings import GatewaySettings, JwtSettings
from shared.config import ConfigError, Env
from tests.gateway.conftest import GatewayFactory, RunningGateway
from tests.gateway.support import BODY, RUNS
from tests.support.jwts import SUPABASE_ISSUER, SUPABASE_SECRET, supabase_token
from tests.support.processes import ServiceProcess

ROLE_CLAIM = "app_metadata.tickertape_role"
ALICE, BOB, ADMIN = (str(uuid.uuid4()) for _ in range(3))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def supabase(start_gateway: GatewayFactory) -> RunningGateway:
    settings = JwtSettings(
        secret=SUPABASE_SECRET, audience="authenticated", issuer=SUPABASE_ISSUER, role_claim=ROLE_CLAIM
    )
    return await start_gateway(auth=True, jwt=settings, high_priority_users=frozenset({ALICE}))


async def test_a_supabase_user_submits_and_reads_as_their_sub(supabase: RunningGateway) -> None:
    async with httpx.AsyncClient(base_url=supabase.url, timeout=10) as http:
        token = supabase_token(ALICE)
        posted = await http.post(RUNS, json=BODY, headers=bearer(token))
        assert posted.status_code == 202, posted.text
        run_id = posted.json()["runId"]
        assert (await http.get(f"{RUNS}/{run_id}", headers=bearer(token))).status_code == 200
        who = (await http.get("/api/trading/session", headers=bearer(token))).json()
        assert who["userId"] == ALICE and who["via"] == "jwt"
        assert (await http.get(f"{RUNS}/{run_id}", headers=bearer(supabase_token(BOB)))).status_code == 404


async def test_high_priority_comes_from_the_role_claim_not_the_static_list(supabase: RunningGateway) -> None:
    high = {**BODY, "priority": "high"}
    async with httpx.AsyncClient(base_url=supabase.url, timeout=10) as http:
        listed_only = await http.post(RUNS, json=high, headers=bearer(supabase_token(ALICE)))
        assert listed_only.status_code == 403 and listed_only.json()["field"] == "priority"
        for role in ("high-priority", "admin"):
            token = supabase_token(BOB, app_role=role)
            assert (await http.post(RUNS, json=high, headers=bearer(token))).status_code == 202, role


def _refusals() -> dict[str, tuple[str, str]]:
    """name → (token, a phrase its 401 detail must contain)."""
    now = int(time.time())
    return {
        "expired": (supabase_token(ALICE, ttl_s=-120), "expired"),
        "wrong audience": (supabase_token(ALICE, aud="anon-key-audience"), "audience"),
        "wrong issuer": (supabase_token(ALICE, iss="https://evil.supabase.co/auth/v1"), "issuer"),
        "bad signature": (
            supabase_token(ALICE, secret="another-project-secret-of-32-chars-or-more"),
            "signature",
        ),
        "alg none": (
            jwt.encode({"sub": ALICE, "exp": now + 60, "aud": "authenticated"}, "", "none"),
            "'none'",
        ),
        "no exp": (supabase_token(ALICE, exp=None), "'exp'"),
        "no sub": (supabase_token(None), "'sub'"),
        "not yet valid": (supabase_token(ALICE, nbf=now + 600), "not valid yet"),
        "not a jwt": ("eyJhbGciOi.broken", "well-formed"),
        "HS512": (jwt.encode({"sub": ALICE, "exp": now + 60}, SUPABASE_SECRET * 2, "HS512"), "'HS512'"),
    }


async def test_every_refusal_is_a_401_problem_naming_the_reason_without_the_token(
    supabase: RunningGateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with httpx.AsyncClient(base_url=supabase.url, timeout=10) as http:
        for name, (token, reason) in _refusals().items():
            for response in (
                await http.post(RUNS, json=BODY, headers=bearer(token)),
                await http.get(f"{RUNS}/01J00000000000000000000000/events", headers=bearer(token)),
                await http.post("/api/trading/session", json={"token": token}),
            ):
                assert response.status_code == 401, (name, response.text)
                assert response.headers["content-type"] == "application/problem+json"
                detail = response.json()["detail"]
                assert reason in detail, (name, detail)
                assert token not in response.text
                assert not [part for part in token.split(".") if len(part) > 8 and part in response.text]
            assert token not in caplog.text
    assert response.json()["field"] == "token"  # the sign-in form names its field


async def test_clock_skew_leeway_is_bounded(start_gateway: GatewayFactory) -> None:
    gateway = await start_gateway(auth=True, jwt=JwtSettings(secret=SUPABASE_SECRET, leeway_s=30))
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
        just_expired = supabase_token(ALICE, ttl_s=-10)
        assert (await http.get("/api/trading/session", headers=bearer(just_expired))).status_code == 200
        long_expired = supabase_token(ALICE, ttl_s=-60)
        assert (await http.get("/api/trading/session", headers=bearer(long_expired))).status_code == 401
    with pytest.raises(ConfigError, match="TT_JWT_LEEWAY_S"):
        GatewaySettings.from_env(
            Env({"TT_AUTH": "jwt", "TT_JWT_SECRET": SUPABASE_SECRET, "TT_JWT_LEEWAY_S": "301"})
        )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "exactly one"),
        ({"TT_JWT_SECRET": SUPABASE_SECRET, "TT_JWT_JWKS_URL": "http://127.0.0.1:1/jwks"}, "exactly one"),
        ({"TT_JWT_SECRET": "short"}, "at least 32"),
    ],
)
def test_jwt_settings_fail_at_start_naming_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        GatewaySettings.from_env(Env({"TT_AUTH": "jwt", **env}))


def test_jwt_settings_from_env() -> None:
    env = {"TT_AUTH": "jwt", "TT_JWT_SECRET": SUPABASE_SECRET, "TT_JWT_ROLE_CLAIM": ROLE_CLAIM}
    settings = GatewaySettings.from_env(Env(env))
    assert settings.auth and settings.jwt is not None
    assert (settings.jwt.role_claim, settings.jwt.user_claim, settings.jwt.leeway_s) == (
        ROLE_CLAIM,
        "sub",
        30,
    )
    tokens = GatewaySettings.from_env(Env({"TT_AUTH": "tokens"}))
    assert tokens.auth and tokens.jwt is None


async def test_a_jwt_signs_in_to_a_cookie_that_ends_with_the_jwt(supabase: RunningGateway) -> None:
    async with httpx.AsyncClient(base_url=supabase.url, timeout=10) as http:
        token = supabase_token(ALICE, ttl_s=300, app_role="admin")
        signed = await http.post("/api/trading/session", json={"token": token})
        assert signed.status_code == 200, signed.text
        body = signed.json()
        assert body["userId"] == ALICE and body["roles"] == ["admin", "high-priority"]
        exp = jwt.decode(token, options={"verify_signature": False})["exp"]
        assert body["expiresAt"] <= exp
        for cookie in signed.headers.get_list("set-cookie"):
            max_age = int(cookie.split("Max-Age=")[1].split(";")[0])
            assert 290 <= max_age <= 300, cookie
        csrf = {"X-CSRF-Token": body["csrfToken"]}
        posted = await http.post(RUNS, json={**BODY, "priority": "high"}, headers=csrf)  # roles ride along
        assert posted.status_code == 202, posted.text
        run_id = posted.json()["runId"]
        async with http.stream("GET", f"{RUNS}/{run_id}/events") as events:  # EventSource: cookie only
            assert events.status_code == 200
        who = (await http.get("/api/trading/session")).json()
        assert who["via"] == "cookie" and who["userId"] == ALICE


async def test_an_admin_reads_any_run_and_others_stay_isolated(supabase: RunningGateway) -> None:
    alice, bob = (bearer(supabase_token(u)) for u in (ALICE, BOB))
    admin = bearer(supabase_token(ADMIN, app_role="admin"))
    async with httpx.AsyncClient(base_url=supabase.url, timeout=10) as http:
        run_id = (await http.post(RUNS, json=BODY, headers=alice)).json()["runId"]
        for path in (
            f"{RUNS}/{run_id}",
            f"/api/trading/progress/{run_id}",
            f"/api/trading/decision/runs/{run_id}",
        ):
            assert (await http.get(path, headers=admin)).status_code == 200, path
            assert (await http.get(path, headers=bob)).status_code == 404, path
        async with http.stream("GET", f"{RUNS}/{run_id}/events", headers=admin) as events:
            assert events.status_code == 200
        async with http.stream("GET", f"{RUNS}/{run_id}/events", headers=bob) as events:
            assert events.status_code == 404
        assert (await http.delete(f"{RUNS}/{run_id}", headers=admin)).status_code == 404  # read, not write
        refused = await http.get(RUNS, params={"user": ALICE}, headers=bob)
        assert refused.status_code == 403 and refused.json()["field"] == "user"
        for who, user in ((bob, BOB), (admin, ALICE)):  # allowed: 503 only as no projector runs here
            assert (await http.get(RUNS, params={"user": user}, headers=who)).status_code == 503


@pytest.fixture
def projector(redis: Redis, redis_url: str, state_dir: Path) -> Iterator[ServiceProcess]:
    env = {"REDIS_URL": redis_url, "TT_STATE_DIR": str(state_dir), "TT_PREFIX": "tt:",
           "TT_PROJECTOR_BATCH_WAIT_MS": "50"}  # fmt: skip
    with ServiceProcess("projector", env, log_dir=state_dir) as process:
        yield process


async def test_an_admin_lists_another_users_runs(
    start_gateway: GatewayFactory, projector: ServiceProcess
) -> None:
    settings = JwtSettings(secret=SUPABASE_SECRET, role_claim=ROLE_CLAIM)
    gateway = await start_gateway(auth=True, jwt=settings, projector_url=projector.url)
    alice, bob = bearer(supabase_token(ALICE)), bearer(supabase_token(BOB))
    admin = bearer(supabase_token(ADMIN, app_role="admin"))
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
        run_id = (await http.post(RUNS, json=BODY, headers=alice)).json()["runId"]
        async with asyncio.timeout(10):
            while not (page := (await http.get(RUNS, params={"user": ALICE}, headers=admin)).json())["runs"]:
                await asyncio.sleep(0.05)
        assert [r["runId"] for r in page["runs"]] == [run_id]
        assert (await http.get(RUNS, headers=admin)).json()["runs"] == []  # without ?user=: their own
        assert (await http.get(RUNS, headers=bob)).json()["runs"] == []
        assert (await http.get(RUNS, params={"user": ALICE}, headers=bob)).status_code == 403


async def test_only_an_admin_reads_the_dead_letters(supabase: RunningGateway, redis: Redis) -> None:
    """The dead-letter stream as a runner writes it, newest first, for an admin; 403 for others."""
    for run_id in ("run-a", "run-b"):
        await redis.xadd(
            "tt:deadletter",
            {"queue": "tt:queue", "id": "1-0", "r": run_id, "reason": "max_attempts", "detail": "gave up",
             "deliveries": 4, "runner": "w1", "at": "1.5"},
        )  # fmt: skip
    admin = bearer(supabase_token(ADMIN, app_role="admin"))
    path = "/api/trading/admin/deadletters"
    async with httpx.AsyncClient(base_url=supabase.url, timeout=10) as http:
        listed = (await http.get(path, params={"limit": 1}, headers=admin)).json()["deadletters"]
        assert [(d["runId"], d["reason"], d["deliveries"]) for d in listed] == [("run-b", "max_attempts", 4)]
        refused = await http.get(path, headers=bearer(supabase_token(BOB)))
        assert refused.status_code == 403
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert (await http.get(path, params={"limit": 0}, headers=admin)).status_code == 422
