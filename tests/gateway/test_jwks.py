"""TT_AUTH=jwt with an OIDC issuer's JWKS served over real HTTP on 127.0.0.1: RS256 and ES256,
unknown kids, algorithm confusion, key rotation without a restart, and an issuer outage."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from services.gateway.settings import JwtSettings
from tests.gateway.conftest import GatewayFactory, RunningGateway
from tests.support.jwts import OIDC_AUDIENCE, OIDC_ISSUER, JwksServer, SigningKey

SESSION = "/api/trading/session"


@pytest.fixture(scope="module")
def keys() -> dict[str, SigningKey]:
    return {"k1": SigningKey.rsa("k1"), "k2": SigningKey.rsa("k2"), "e1": SigningKey.ec("e1")}


@pytest.fixture
def issuer(keys: dict[str, SigningKey]) -> Iterator[JwksServer]:
    server = JwksServer([keys["k1"], keys["e1"]])
    try:
        yield server
    finally:
        server.close()


def hs256_by_hand(header: dict[str, Any], claims: dict[str, Any], secret: bytes) -> str:
    """The algorithm-confusion attack: HS256 keyed with the issuer's public key (PyJWT refuses to
    make one, so it is assembled here)."""

    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).decode().rstrip("=")

    signing_input = f"{part(json.dumps(header).encode())}.{part(json.dumps(claims).encode())}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{part(mac)}"


async def oidc_gateway(
    start_gateway: GatewayFactory, issuer: JwksServer, **jwt_settings: Any
) -> RunningGateway:
    settings = JwtSettings(
        jwks_url=issuer.url, issuer=OIDC_ISSUER, audience=OIDC_AUDIENCE, jwks_timeout_s=1.0, **jwt_settings
    )
    return await start_gateway(auth=True, jwt=settings)


async def whoami(http: httpx.AsyncClient, token: str) -> httpx.Response:
    return await http.get(SESSION, headers={"Authorization": f"Bearer {token}"})


async def test_rs256_and_es256_tokens_from_the_jwks_are_accepted(
    start_gateway: GatewayFactory, issuer: JwksServer, keys: dict[str, SigningKey]
) -> None:
    gateway = await oidc_gateway(start_gateway, issuer)
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
        for kid in ("k1", "e1"):
            response = await whoami(http, keys[kid].token("auth0|alice"))
            assert response.status_code == 200, response.text
            assert response.json()["userId"] == "auth0|alice"
    assert issuer.requests == 1  # one fetch, then the cache


async def test_refusals_name_the_reason(
    start_gateway: GatewayFactory, issuer: JwksServer, keys: dict[str, SigningKey]
) -> None:
    gateway = await oidc_gateway(start_gateway, issuer, jwks_refresh_s=60)
    public_pem = (
        keys["k1"]
        .private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    claims = {"sub": "mallory", "exp": 2_000_000_000, "iss": OIDC_ISSUER, "aud": OIDC_AUDIENCE}
    confused = hs256_by_hand({"alg": "HS256", "typ": "JWT", "kid": "k1"}, claims, public_pem)
    stranger = SigningKey.rsa("k1")  # same kid, another private key
    refusals = {
        "unknown kid": (SigningKey.rsa("k9").token("alice"), "'k9'"),
        "algorithm confusion": (confused, "'HS256' is not accepted"),
        "alg none": (jwt.encode({"sub": "alice", "exp": 2_000_000_000}, "", "none"), "'none'"),
        "bad signature": (stranger.token("alice"), "signature"),
        "wrong audience": (keys["k1"].token("alice", aud="another-api"), "audience"),
        "wrong issuer": (keys["k1"].token("alice", iss="https://evil.example/"), "issuer"),
        "expired": (keys["k1"].token("alice", ttl_s=-300), "expired"),
        "kid/alg mismatch": (keys["e1"].token("alice", headers={"kid": "k1"}), "RS256"),
    }
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
        for name, (token, reason) in refusals.items():
            response = await whoami(http, token)
            assert response.status_code == 401, (name, response.text)
            assert response.headers["content-type"] == "application/problem+json"
            assert reason in response.json()["detail"], (name, response.json()["detail"])
            assert token not in response.text
    assert issuer.requests == 1  # the unknown kid may not refetch within jwks_refresh_s


async def test_a_rotated_key_works_without_a_restart_and_a_removed_one_stops(
    start_gateway: GatewayFactory, issuer: JwksServer, keys: dict[str, SigningKey]
) -> None:
    gateway = await oidc_gateway(start_gateway, issuer, jwks_refresh_s=0.3, jwks_max_age_s=1.5)
    old, new = keys["k1"], keys["k2"]
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
        assert (await whoami(http, old.token("alice"))).status_code == 200
        assert (await whoami(http, new.token("alice"))).status_code == 401  # not published yet
        issuer.keys.append(new)  # the issuer rotates: the new kid appears beside the old one
        assert (await whoami(http, new.token("alice"))).status_code == 401  # within the refresh interval
        await asyncio.sleep(0.35)
        assert (await whoami(http, new.token("alice"))).status_code == 200  # unknown kid → refetch
        assert (await whoami(http, old.token("alice"))).status_code == 200  # the old one still works
        issuer.keys.remove(old)
        await asyncio.sleep(1.6)  # the cached set grows stale and is refetched
        refused = await whoami(http, old.token("alice"))
        assert refused.status_code == 401 and "'k1'" in refused.json()["detail"]
        assert (await whoami(http, new.token("alice"))).status_code == 200


async def test_unknown_kids_refetch_at_most_once_per_interval(
    start_gateway: GatewayFactory, issuer: JwksServer
) -> None:
    gateway = await oidc_gateway(start_gateway, issuer, jwks_refresh_s=60)
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
        tokens = [SigningKey.rsa(f"random-{i}").token("alice") for i in range(3)]
        answers = await asyncio.gather(*(whoami(http, t) for t in tokens * 5))
    assert {a.status_code for a in answers} == {401}
    assert issuer.requests == 1


async def test_an_issuer_outage_keeps_the_cached_keys_and_warns(
    start_gateway: GatewayFactory,
    issuer: JwksServer,
    keys: dict[str, SigningKey],
    caplog: pytest.LogCaptureFixture,
) -> None:
    gateway = await oidc_gateway(start_gateway, issuer, jwks_refresh_s=0.1, jwks_max_age_s=0.2)
    token = keys["k1"].token("alice")
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
        assert (await whoami(http, token)).status_code == 200
        issuer.down = True
        await asyncio.sleep(0.3)
        with caplog.at_level(logging.WARNING, logger="services.gateway.jwks"):
            assert (await whoami(http, token)).status_code == 200  # stale, refetch failed: cached keys
            unknown = await whoami(http, SigningKey.rsa("k7").token("alice"))
        assert unknown.status_code == 401
        assert issuer.requests >= 2
        warnings = [r for r in caplog.records if r.name == "services.gateway.jwks"]
        assert warnings and "keeping 2 cached key(s)" in warnings[0].getMessage()
        assert token not in caplog.text


async def test_an_issuer_that_never_answered_is_a_401_not_a_500(start_gateway: GatewayFactory) -> None:
    dead = JwksServer(down=True)
    try:
        gateway = await oidc_gateway(start_gateway, dead)
        async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
            response = await whoami(http, SigningKey.rsa("k1").token("alice"))
        assert response.status_code == 401 and "'k1'" in response.json()["detail"]
    finally:
        dead.close()
