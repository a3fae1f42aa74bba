"""JWT bearer tokens (``TT_AUTH=jwt``): verified by PyJWT with a shared secret or an issuer's JWKS.

The user id and roles come from claims. Every refusal is a ``JwtRejected`` whose reason a person
can act on; the token itself is never part of a reason or a log line.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import jwt
from jwt import PyJWK

from services.gateway.jwks import JWKS_ALGORITHMS, JwksCache
from services.gateway.settings import JwtSettings

logger = logging.getLogger(__name__)

ADMIN = "admin"
HIGH_PRIORITY = "high-priority"
ROLES = frozenset({ADMIN, HIGH_PRIORITY})
SECRET_ALGORITHMS = frozenset({"HS256"})
MAX_USER_ID_CHARS = 256


class JwtRejected(Exception):
    """The token is not accepted; ``reason`` says why (never the token)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Identity:
    user_id: str
    roles: frozenset[str]
    expires_at: int


class JwtVerifier:
    """``verify(token)`` → the identity it carries, or ``JwtRejected``."""

    def __init__(self, settings: JwtSettings) -> None:
        self.settings = settings
        self.jwks: JwksCache | None = None
        if settings.jwks_url:
            self.jwks = JwksCache(
                settings.jwks_url,
                refresh_s=settings.jwks_refresh_s,
                max_age_s=settings.jwks_max_age_s,
                timeout_s=settings.jwks_timeout_s,
            )
        self.algorithms = JWKS_ALGORITHMS if self.jwks else SECRET_ALGORITHMS

    async def verify(self, token: str) -> Identity:
        header = _header(token)
        alg = header.get("alg")
        if alg not in self.algorithms:
            accepted = ", ".join(sorted(self.algorithms))
            raise JwtRejected(f"the token's algorithm {alg!r} is not accepted here (only {accepted})")
        key = await self._key(header, str(alg))
        claims = self._decode(token, key, str(alg))
        return Identity(_user_id(claims, self.settings.user_claim), self._roles(claims), int(claims["exp"]))

    async def _key(self, header: dict[str, Any], alg: str) -> str | PyJWK:
        if self.jwks is None:
            assert self.settings.secret is not None  # settings require a secret or a JWKS URL
            return self.settings.secret
        kid = header.get("kid")
        key = await self.jwks.key(kid if isinstance(kid, str) else None)
        if key is None:
            raise JwtRejected(f"the token's signing key id (kid {kid!r}) is not one of the issuer's keys")
        if key.algorithm_name != alg:
            raise JwtRejected(f"the token says {alg} but its key (kid {kid!r}) is {key.algorithm_name}")
        return key

    def _decode(self, token: str, key: str | PyJWK, alg: str) -> dict[str, Any]:
        s = self.settings
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=s.audience,
                issuer=s.issuer,
                leeway=s.leeway_s,
                options={"require": ["exp"], "verify_aud": s.audience is not None},
            )
        except jwt.InvalidTokenError as exc:
            raise JwtRejected(_reason(exc, s)) from None
        return claims

    def _roles(self, claims: dict[str, Any]) -> frozenset[str]:
        value = claim_at(claims, self.settings.role_claim)
        values = [value] if isinstance(value, str) else value if isinstance(value, list) else []
        roles = frozenset(v for v in values if isinstance(v, str)) & ROLES
        return roles | {HIGH_PRIORITY} if ADMIN in roles else roles


def claim_at(claims: dict[str, Any], path: str) -> Any:
    """The claim at a dotted path (``app_metadata.tickertape_role``), or None."""
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _header(token: str) -> dict[str, Any]:
    try:
        header: dict[str, Any] = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError:
        raise JwtRejected("the bearer token is not a well-formed JWT") from None
    return header


def _user_id(claims: dict[str, Any], claim: str) -> str:
    value = claim_at(claims, claim)
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_USER_ID_CHARS:
        raise JwtRejected(f"the token has no usable user id in its {claim!r} claim")
    if not value.isprintable():
        raise JwtRejected(f"the token's {claim!r} claim holds unprintable characters")
    return value


def _reason(exc: jwt.InvalidTokenError, s: JwtSettings) -> str:
    """What was wrong, for the 401's ``detail``: PyJWT's errors never contain the token."""
    match exc:
        case jwt.ExpiredSignatureError():
            return "the token has expired (exp is in the past): sign in again"
        case jwt.InvalidAudienceError():
            return f"the token's audience (aud) is not {s.audience!r}"
        case jwt.InvalidIssuerError():
            return f"the token's issuer (iss) is not {s.issuer!r}"
        case jwt.InvalidSignatureError():
            return "the token's signature does not verify (wrong key or altered token)"
        case jwt.MissingRequiredClaimError():
            return f"the token has no {exc.claim!r} claim"
        case jwt.ImmatureSignatureError():
            return "the token is not valid yet (nbf or iat is in the future)"
        case jwt.InvalidAlgorithmError():
            return "the token's algorithm is not accepted here"
        case _:
            return f"the token is not valid ({type(exc).__name__})"
