"""Who is calling: bearer API tokens (only their hashes are held), bearer JWTs (``TT_AUTH=jwt``,
see ``jwt_auth``) or a signed session cookie.

Cookie sessions are stateless: ``user.expiry.csrf.roles.mac`` signed with the session secret, so
any replica can check them; a session made from a JWT ends no later than the JWT. The CSRF token
travels in the signed cookie and must be echoed in the ``X-CSRF-Token`` header (double submit) on
unsafe methods, and a present ``Origin`` must be ours.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Literal

from fastapi import Request

from services.gateway.jwt_auth import ADMIN, HIGH_PRIORITY, Identity, JwtRejected, JwtVerifier
from services.gateway.problems import Problem
from services.gateway.settings import GatewaySettings

SESSION_COOKIE = "tt_session"
CSRF_COOKIE = "tt_csrf"
CSRF_HEADER = "x-csrf-token"
LOCAL_USER = "local"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True, slots=True)
class Caller:
    user_id: str
    via: Literal["anonymous", "token", "jwt", "cookie"]
    roles: frozenset[str] = frozenset()
    """``high-priority`` and ``admin``: from the JWT's role claim, else from the static lists."""

    @property
    def admin(self) -> bool:
        return ADMIN in self.roles

    @property
    def high_priority(self) -> bool:
        return HIGH_PRIORITY in self.roles

    def may_read(self, owner: str) -> bool:
        """Another user's run exists for an admin only (for anyone else it is a 404)."""
        return owner == self.user_id or self.admin


@dataclass(frozen=True, slots=True)
class Session:
    user_id: str
    expires_at: int
    csrf: str
    cookie: str
    roles: frozenset[str] = frozenset()


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Authenticator:
    """Maps a request to its caller; raises 401/403 problems."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self._key = hashlib.sha256(settings.session_secret.encode()).digest()
        self.jwt = JwtVerifier(settings.jwt) if settings.jwt else None

    @property
    def enabled(self) -> bool:
        return self.settings.auth

    def user_for_token(self, token: str) -> str | None:
        digest = token_hash(token)
        for known, user in self.settings.api_tokens.items():
            if hmac.compare_digest(known, digest):
                return user
        return None

    def new_session(
        self, user_id: str, roles: frozenset[str] = frozenset(), until: int | None = None
    ) -> Session:
        """A signed session for ``user_id``, ending after the session TTL or at ``until``."""
        expires = int(time.time()) + self.settings.session_ttl_s
        expires = min(expires, until) if until is not None else expires
        csrf = secrets.token_urlsafe(24)
        payload = f"{_b64(user_id)}.{expires}.{csrf}.{_b64(','.join(sorted(roles)))}"
        return Session(user_id, expires, csrf, f"{payload}.{self._mac(payload)}", roles)

    def read_session(self, cookie: str) -> Session | None:
        payload, _, mac = cookie.rpartition(".")
        if not payload or not hmac.compare_digest(mac, self._mac(payload)):
            return None
        try:
            user_b64, expires_text, csrf, *rest = payload.split(".")
            user_id, expires = _unb64(user_b64), int(expires_text)
            roles = frozenset(r for r in _unb64(rest[0]).split(",") if r) if rest else frozenset()
        except (ValueError, IndexError):
            return None
        if expires < time.time() or len(rest) > 1:
            return None
        return Session(user_id, expires, csrf, cookie, roles)

    async def sign_in(self, token: str) -> Session:
        """Trade an API token or a JWT for a session (401 problem naming ``token`` otherwise)."""
        if self.jwt is not None:
            identity = await self._verified(token, field="token")
            return self.new_session(identity.user_id, identity.roles, until=identity.expires_at)
        user = self.user_for_token(token)
        if user is None:
            raise Problem(401, "That token is not valid: ask an operator for an API token.", field="token")
        return self.new_session(user)

    async def caller(self, request: Request) -> Caller:
        if not self.enabled:
            return Caller(LOCAL_USER, "anonymous", self._static_roles(LOCAL_USER))
        header = request.headers.get("authorization", "")
        if header:
            return await self._bearer(header)
        cookie = request.cookies.get(SESSION_COOKIE)
        session = self.read_session(cookie) if cookie else None
        if session is None:
            raise _unauthorized(
                "Send 'Authorization: Bearer <token>' or sign in at POST /api/trading/session."
            )
        if request.method not in SAFE_METHODS:
            self._check_csrf(request, session)
        roles = session.roles if self.jwt else self._static_roles(session.user_id)
        return Caller(session.user_id, "cookie", roles)

    async def _bearer(self, header: str) -> Caller:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _unauthorized("The Authorization header must be 'Bearer <token>'.")
        if self.jwt is not None:
            identity = await self._verified(token.strip())
            return Caller(identity.user_id, "jwt", identity.roles)
        user = self.user_for_token(token.strip())
        if user is None:
            raise _unauthorized("The bearer token is not valid: ask an operator for a token.")
        return Caller(user, "token", self._static_roles(user))

    async def _verified(self, token: str, field: str | None = None) -> Identity:
        assert self.jwt is not None
        try:
            return await self.jwt.verify(token)
        except JwtRejected as exc:
            raise _unauthorized(f"The bearer token was refused: {exc.reason}.", field=field) from None

    def _static_roles(self, user_id: str) -> frozenset[str]:
        return frozenset({HIGH_PRIORITY}) if user_id in self.settings.high_priority_users else frozenset()

    def _check_csrf(self, request: Request, session: Session) -> None:
        origin = request.headers.get("origin")
        if origin and origin not in self._own_origins(request):
            raise Problem(403, f"Origin {origin} may not call this API with a session cookie.", slug="csrf")
        sent = request.headers.get(CSRF_HEADER, "")
        if not sent or not hmac.compare_digest(sent, session.csrf):
            raise Problem(
                403,
                "Missing or wrong X-CSRF-Token header: echo the csrfToken from POST /api/trading/session "
                "(also in the tt_csrf cookie).",
                slug="csrf",
            )

    def _own_origins(self, request: Request) -> set[str]:
        host = request.headers.get("host", "")
        own = {f"http://{host}", f"https://{host}"} if host else set()
        return own | set(self.settings.allowed_origins)

    def _mac(self, payload: str) -> str:
        return hmac.new(self._key, payload.encode(), hashlib.sha256).hexdigest()


def _unauthorized(detail: str, field: str | None = None) -> Problem:
    return Problem(401, detail, field=field, headers={"WWW-Authenticate": 'Bearer realm="tickertape"'})


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _unb64(text: str) -> str:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
