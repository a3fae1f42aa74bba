"""Tokens as real issuers mint them, and a real JWKS endpoint on 127.0.0.1 for the tests.

Supabase signs HS256 with the project's JWT secret: ``sub`` (the user's UUID), ``role``
(``authenticated``), ``aud: authenticated``, ``iss: https://<ref>.supabase.co/auth/v1``, and the
app's own claims under ``app_metadata``. An OIDC provider (Auth0, Keycloak, Cognito…) signs RS256 or
ES256 with a key named by ``kid`` in the header and published at its JWKS URL.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

SUPABASE_SECRET = "super-secret-jwt-token-with-at-least-32-characters-long"
SUPABASE_ISSUER = "https://abcdefghijklmnop.supabase.co/auth/v1"
OIDC_ISSUER = "https://issuer.example.test/"
OIDC_AUDIENCE = "https://tickertape.example.test"


def supabase_token(
    sub: str | None,
    *,
    secret: str = SUPABASE_SECRET,
    ttl_s: float = 3600,
    app_role: str | None = None,
    **overrides: Any,
) -> str:
    """A Supabase access token (``app_role`` goes to ``app_metadata.tickertape_role``)."""
    now = int(time.time())
    app_metadata: dict[str, Any] = {"provider": "email", "providers": ["email"]}
    if app_role:
        app_metadata["tickertape_role"] = app_role
    claims: dict[str, Any] = {
        "iss": SUPABASE_ISSUER,
        "sub": sub,
        "aud": "authenticated",
        "exp": int(now + ttl_s),
        "iat": now,
        "email": f"{(sub or 'nobody')[:8]}@example.test",
        "phone": "",
        "app_metadata": app_metadata,
        "user_metadata": {},
        "role": "authenticated",
        "aal": "aal1",
        "amr": [{"method": "password", "timestamp": now}],
        "session_id": str(uuid.uuid4()),
        "is_anonymous": False,
    }
    claims.update(overrides)
    return jwt.encode({k: v for k, v in claims.items() if v is not None}, secret, algorithm="HS256")


@dataclass
class SigningKey:
    """An issuer's key pair: ``kid``, algorithm, the private key and its public JWK."""

    kid: str
    alg: str
    private: Any
    jwk: dict[str, Any]

    @classmethod
    def rsa(cls, kid: str) -> SigningKey:
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = json.loads(RSAAlgorithm.to_jwk(private.public_key()))
        return cls(kid, "RS256", private, {**jwk, "kid": kid, "use": "sig", "alg": "RS256"})

    @classmethod
    def ec(cls, kid: str) -> SigningKey:
        private = ec.generate_private_key(ec.SECP256R1())
        jwk = json.loads(ECAlgorithm.to_jwk(private.public_key()))
        return cls(kid, "ES256", private, {**jwk, "kid": kid, "use": "sig", "alg": "ES256"})

    def token(
        self, sub: str, *, ttl_s: float = 3600, headers: dict[str, Any] | None = None, **claims: Any
    ) -> str:
        """An OIDC access token as Auth0 or Keycloak issue it."""
        now = int(time.time())
        body: dict[str, Any] = {
            "iss": OIDC_ISSUER,
            "sub": sub,
            "aud": [OIDC_AUDIENCE, f"{OIDC_ISSUER}userinfo"],
            "iat": now,
            "exp": int(now + ttl_s),
            "azp": "tickertape-web",
            "scope": "openid profile email",
            **claims,
        }
        return jwt.encode(
            body, self.private, algorithm=self.alg, headers={"kid": self.kid, **(headers or {})}
        )


@dataclass
class JwksServer:
    """A JWKS document served over real HTTP; ``keys`` and ``down`` change what it answers."""

    keys: list[SigningKey] = field(default_factory=list)
    down: bool = False
    requests: int = 0

    def __post_init__(self) -> None:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests += 1
                if server.down:
                    self.send_error(503, "issuer down")
                    return
                body = json.dumps({"keys": [k.jwk for k in server.keys]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._http.server_address[1]}/.well-known/jwks.json"

    def close(self) -> None:
        self._http.shutdown()
        self._http.server_close()
        self._thread.join(5)
