"""The gateway's settings, read once from the environment at start and frozen afterwards."""

from __future__ import annotations

import os
import re
import secrets
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from shared.catalog import DATA_PROVIDERS, PipelineSpecError, parse_pipelines
from shared.config import CommonSettings, ConfigError, Env

STATIC_DIR = Path(__file__).resolve().parent / "static"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_RATE = re.compile(r"^(\d+)\s*/\s*(s|sec|second|m|min|minute|h|hour)$")
_WINDOWS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600}


MAX_AUTO_WORKERS = 4
"""``TT_GATEWAY_WORKERS=0`` takes one per usable CPU up to this: each worker is ~110 MB at rest."""


def auto_workers() -> int:
    """One gateway process per CPU this process may run on, at most ``MAX_AUTO_WORKERS``; one off
    Linux, where a port shared with SO_REUSEPORT is not balanced over its sockets."""
    if sys.platform != "linux":
        return 1
    return max(1, min(len(os.sched_getaffinity(0)), MAX_AUTO_WORKERS))


def default_process_id() -> str:
    """host-pid-random: names this process's wake-up stream."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


def parse_tokens(raw: str | None) -> dict[str, str]:
    """``user:sha256hex,...`` → {sha256hex: user}; only hashes are ever held."""
    tokens: dict[str, str] = {}
    for item in (raw or "").split(","):
        item = item.strip()
        if not item:
            continue
        user, sep, digest = item.rpartition(":")
        digest = digest.strip().lower()
        if not sep or not user.strip() or not _HEX64.match(digest):
            raise ConfigError("TT_API_TOKENS must be 'user:sha256hex,...' (the SHA-256 of each token)")
        tokens[digest] = user.strip()
    return tokens


def parse_rate(raw: str | None, default: tuple[int, int]) -> tuple[int, int]:
    """``30/min`` → (30, 60); ``0/min`` turns the limit off."""
    if raw is None:
        return default
    match = _RATE.match(raw.strip().lower())
    if not match:
        raise ConfigError(f"TT_SUBMIT_RATE must look like '30/min', got {raw!r}")
    return int(match.group(1)), _WINDOWS[match.group(2)]


def parse_urls(raw: str, name: str) -> tuple[str, ...]:
    """``http://a:8001,http://b:8001`` → ("http://a:8001", "http://b:8001")."""
    urls = tuple(u.strip().rstrip("/") for u in raw.split(",") if u.strip())
    if not urls or not all(u.startswith(("http://", "https://")) for u in urls):
        raise ConfigError(f"TT_{name} must be comma-separated http(s):// URLs, got {raw!r}")
    return urls


def _names(raw: str | None) -> frozenset[str]:
    return frozenset(x.strip() for x in (raw or "").split(",") if x.strip())


# --- JWT bearer tokens (TT_AUTH=jwt) -------------------------------------------------------------
JWT_MAX_LEEWAY_S = 300.0
JWT_MIN_SECRET_CHARS = 32  # RFC 7518 §3.2: an HS256 key at least as long as the hash (256 bits)


@dataclass(frozen=True, slots=True)
class JwtSettings:
    """How ``TT_AUTH=jwt`` verifies tokens: exactly one of ``secret`` (HS256) or ``jwks_url``."""

    secret: str | None = None
    jwks_url: str | None = None
    issuer: str | None = None
    audience: str | None = None
    leeway_s: float = 30.0
    user_claim: str = "sub"
    role_claim: str = "role"
    jwks_refresh_s: float = 60.0
    """The least time between two JWKS fetches: an unknown ``kid`` refreshes at most this often."""
    jwks_max_age_s: float = 3600.0
    """Keys older than this are refetched (so a removed key stops working without a new ``kid``)."""
    jwks_timeout_s: float = 2.0

    @classmethod
    def from_env(cls, env: Env) -> JwtSettings:
        secret, jwks_url = env.optional("JWT_SECRET"), env.optional("JWT_JWKS_URL")
        if (secret is None) == (jwks_url is None):
            raise ConfigError("TT_AUTH=jwt needs exactly one of TT_JWT_SECRET (HS256) or TT_JWT_JWKS_URL")
        if secret is not None and len(secret) < JWT_MIN_SECRET_CHARS:
            raise ConfigError(f"TT_JWT_SECRET must be at least {JWT_MIN_SECRET_CHARS} characters")
        leeway = env.number("JWT_LEEWAY_S", 30.0, minimum=0.0)
        if leeway > JWT_MAX_LEEWAY_S:
            raise ConfigError(f"TT_JWT_LEEWAY_S must be at most {JWT_MAX_LEEWAY_S:g}, got {leeway:g}")
        return cls(
            secret=secret,
            jwks_url=jwks_url,
            issuer=env.optional("JWT_ISSUER"),
            audience=env.optional("JWT_AUDIENCE"),
            leeway_s=leeway,
            user_claim=env.text("JWT_USER_CLAIM", "sub"),
            role_claim=env.text("JWT_ROLE_CLAIM", "role"),
            jwks_refresh_s=env.number("JWT_JWKS_REFRESH_S", 60.0, minimum=0.0),
            jwks_max_age_s=env.number("JWT_JWKS_MAX_AGE_S", 3600.0, minimum=1.0),
            jwks_timeout_s=env.number("JWT_JWKS_TIMEOUT_S", 2.0, minimum=0.1),
        )


def parse_auth(env: Env) -> tuple[bool, JwtSettings | None]:
    """``TT_AUTH``: off (default), ``tokens`` (or true) for API tokens, ``jwt`` for JWTs."""
    raw = (env.optional("AUTH") or "").strip().lower()
    if raw == "jwt":
        return True, JwtSettings.from_env(env)
    return (True, None) if raw == "tokens" else (env.flag("AUTH", False), None)


# --- end JWT --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    """Everything the gateway reads from ``TT_*`` / ``REDIS_URL``."""

    common: CommonSettings
    host: str = "127.0.0.1"
    port: int = 8000
    projector_url: str = "http://127.0.0.1:8001"
    projector_urls: tuple[str, ...] = ()
    """Every projector replica; empty: ``projector_url`` alone."""
    projector_timeout_s: float = 1.0
    projector_probe_s: float = 0.5
    max_active_runs: int = 3
    idempotency_ttl_s: int = 24 * 3600
    auth: bool = False
    jwt: JwtSettings | None = None
    """Set when ``TT_AUTH=jwt``: bearer JWTs instead of ``TT_API_TOKENS``."""
    api_tokens: Mapping[str, str] = field(default_factory=dict)
    session_secret: str = ""
    session_ttl_s: int = 7 * 24 * 3600
    cookie_secure: bool = False
    allowed_origins: frozenset[str] = frozenset()
    high_priority_users: frozenset[str] = frozenset({"local"})
    submit_rate: tuple[int, int] = (30, 60)
    max_body_bytes: int = 16 * 1024
    models_path: str | None = None
    max_wait_s: float = 60.0
    internal_wait_s: float = 30.0
    sync_wait_max_s: float = 600.0
    """The longest ``POST /decision/internal?wait=`` may hold a request: by default the run
    deadline (``TT_RUN_DEADLINE_S``), so a synchronous caller can wait for any run to end."""
    sse_heartbeat_s: float = 15.0
    sse_retry_ms: int = 3000
    sse_queue_size: int = 256
    sse_buffer_bytes: int = 1 << 20
    sse_max_per_user: int = 0
    """Open SSE streams per user and process; 0 is no cap. Defaults to 50 with auth on, and off with
    auth off, where every run belongs to the one user ``local`` and a per-user cap would be a
    global one."""
    sse_block_ms: int = 5000
    redis_pool_size: int = 10
    process_id: str = field(default_factory=default_process_id)
    workers: int = 1
    """Gateway processes serving the port (``TT_GATEWAY_WORKERS``; 0, the default: one per usable
    CPU, at most ``MAX_AUTO_WORKERS``). Each is a whole gateway: its own hub, Redis clients and
    per-user stream count (see ``services.gateway.workers``)."""
    supervisor_pid: int = 0
    """Set by the supervisor in the environment of the workers it starts (not for operators):
    a worker binds its port shared (SO_REUSEPORT) and ``/healthz`` names the supervisor."""
    static_dir: Path = STATIC_DIR
    pipelines: Mapping[str, str] = field(default_factory=dict)
    """Registered pipelines (``TT_PIPELINES``): only their names are used here, the gateway never
    imports a user's module (docs/pipeline.md)."""
    data_provider: str = "synthetic"
    """Where runs that name no provider get their prices (``TT_DATA_PROVIDER``, as the runners
    read it): the page says so when it is demo data."""

    @property
    def projectors(self) -> tuple[str, ...]:
        """The projectors' base URLs: ``TT_PROJECTOR_URLS``, else the one ``TT_PROJECTOR_URL``."""
        return self.projector_urls or (self.projector_url,)

    @classmethod
    def from_env(cls, env: Env | None = None) -> GatewaySettings:
        env = env or Env()
        auth, jwt = parse_auth(env)
        urls = env.optional("PROJECTOR_URLS")
        return cls(
            common=CommonSettings.from_env(env),
            host=env.text("GATEWAY_HOST", "127.0.0.1"),
            port=env.integer("GATEWAY_PORT", 8000, minimum=0),
            projector_url=parse_urls(env.text("PROJECTOR_URL", "http://127.0.0.1:8001"), "PROJECTOR_URL")[0],
            projector_urls=parse_urls(urls, "PROJECTOR_URLS") if urls else (),
            projector_timeout_s=env.number("PROJECTOR_TIMEOUT_S", 1.0, minimum=0.05),
            projector_probe_s=env.number("PROJECTOR_PROBE_S", 0.5, minimum=0.05),
            max_active_runs=env.integer("MAX_ACTIVE_RUNS", 3, minimum=0),
            idempotency_ttl_s=env.integer("IDEMPOTENCY_TTL_S", 24 * 3600, minimum=1),
            auth=auth,
            jwt=jwt,
            api_tokens=parse_tokens(env.optional("API_TOKENS")),
            session_secret=env.optional("SESSION_SECRET") or secrets.token_hex(32),
            session_ttl_s=env.integer("SESSION_TTL_S", 7 * 24 * 3600, minimum=60),
            cookie_secure=env.flag("COOKIE_SECURE", False),
            allowed_origins=_names(env.optional("ALLOWED_ORIGINS")),
            high_priority_users=_names(env.text("HIGH_PRIORITY_USERS", "local")),
            submit_rate=parse_rate(env.optional("SUBMIT_RATE"), (30, 60)),
            max_body_bytes=env.integer("MAX_BODY_BYTES", 16 * 1024, minimum=64),
            models_path=env.optional("MODELS"),
            max_wait_s=env.number("MAX_WAIT_S", 60.0, minimum=0.0),
            internal_wait_s=env.number("INTERNAL_WAIT_S", 30.0, minimum=0.0),
            sync_wait_max_s=env.number("SYNC_WAIT_MAX_S", env.number("RUN_DEADLINE_S", 600.0), minimum=0.0),
            sse_heartbeat_s=env.number("SSE_HEARTBEAT_S", 15.0, minimum=0.1),
            sse_retry_ms=env.integer("SSE_RETRY_MS", 3000, minimum=0),
            sse_queue_size=env.integer("SSE_QUEUE_SIZE", 256, minimum=1),
            sse_buffer_bytes=env.integer("SSE_BUFFER_BYTES", 1 << 20, minimum=0),
            sse_max_per_user=env.integer("SSE_MAX_PER_USER", 50 if auth else 0, minimum=0),
            sse_block_ms=env.integer("SSE_BLOCK_MS", 5000, minimum=10),
            redis_pool_size=env.integer("GATEWAY_REDIS_POOL", 10, minimum=2),
            process_id=env.text("GATEWAY_PROCESS_ID", default_process_id()),
            workers=env.integer("GATEWAY_WORKERS", 0, minimum=0) or auto_workers(),
            supervisor_pid=env.integer("GATEWAY_SUPERVISOR_PID", 0, minimum=0),
            pipelines=_pipelines(env),
            data_provider=_data_provider(env),
        )


def _data_provider(env: Env) -> str:
    provider = env.text("DATA_PROVIDER", "synthetic")
    if provider not in DATA_PROVIDERS:
        raise ConfigError(f"TT_DATA_PROVIDER must be one of {', '.join(DATA_PROVIDERS)}")
    return provider


def _pipelines(env: Env) -> dict[str, str]:
    try:
        return parse_pipelines(env.text("PIPELINES", ""))
    except PipelineSpecError as exc:
        raise ConfigError(str(exc)) from exc
