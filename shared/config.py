"""Reading settings from the environment: one place, typed, failing at start with the name."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from shared.keys import Keys

T = TypeVar("T", int, float)


class ConfigError(Exception):
    """A setting is missing or malformed; the message names it."""


class Env:
    """Typed access to ``TT_*`` variables (and a few unprefixed ones such as ``REDIS_URL``)."""

    def __init__(self, environ: Mapping[str, str] | None = None, prefix: str = "TT_") -> None:
        self.environ = os.environ if environ is None else environ
        self.prefix = prefix

    def raw(self, name: str) -> str | None:
        value = self.environ.get(self.prefix + name)
        return value if value not in (None, "") else None

    def text(self, name: str, default: str) -> str:
        return self.raw(name) or default

    def optional(self, name: str) -> str | None:
        return self.raw(name)

    def integer(self, name: str, default: int, *, minimum: int | None = None) -> int:
        value = self.raw(name)
        try:
            result = default if value is None else int(value)
        except ValueError:
            raise ConfigError(f"{self.prefix}{name} must be an integer, got {value!r}") from None
        return self._at_least(name, result, minimum)

    def number(self, name: str, default: float, *, minimum: float | None = None) -> float:
        value = self.raw(name)
        try:
            result = default if value is None else float(value)
        except ValueError:
            raise ConfigError(f"{self.prefix}{name} must be a number, got {value!r}") from None
        return self._at_least(name, result, minimum)

    def flag(self, name: str, default: bool) -> bool:
        value = self.raw(name)
        if value is None:
            return default
        lowered = value.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{self.prefix}{name} must be true or false, got {value!r}")

    def _at_least(self, name: str, value: T, minimum: T | None) -> T:
        if minimum is not None and value < minimum:
            raise ConfigError(f"{self.prefix}{name} must be at least {minimum}, got {value}")
        return value


DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
SENTINELS_VAR = "TT_REDIS_SENTINELS"
SENTINEL_MASTER_VAR = "TT_REDIS_SENTINEL_MASTER"
SENTINEL_PASSWORD_VAR = "TT_REDIS_SENTINEL_PASSWORD"
SENTINEL_VARS = (SENTINELS_VAR, SENTINEL_MASTER_VAR, SENTINEL_PASSWORD_VAR)
"""What a launcher passes on to its children so they find the same Sentinels."""


@dataclass(frozen=True, slots=True)
class SentinelSpec:
    """Where the Sentinels are and which master they watch; replaces ``REDIS_URL`` when set."""

    sentinels: tuple[tuple[str, int], ...]
    master: str
    password: str | None = field(default=None, repr=False)
    """The Sentinels' own password (``requirepass`` on the Sentinels); never shown or logged."""

    def __str__(self) -> str:
        hosts = ",".join(f"{host}:{port}" for host, port in self.sentinels)
        return f"sentinel master {self.master!r} via {hosts}"


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """How to reach Redis: a URL, or Sentinels naming the current master (the URL's database,
    credentials and TLS options still apply to the master's connections)."""

    url: str
    sentinel: SentinelSpec | None = None


def parse_sentinels(raw: str) -> tuple[tuple[str, int], ...]:
    """``host:port,host:port`` → ((host, port), ...); a ConfigError naming the variable otherwise."""
    nodes = []
    for item in raw.split(","):
        host, sep, port = item.strip().rpartition(":")
        host = host.strip().strip("[]")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(
                f"{SENTINELS_VAR} must be 'host:port,host:port,...' (ports 1-65535), got {item.strip()!r}"
            )
        nodes.append((host, int(port)))
    return tuple(nodes)


def sentinel_from_env(env: Env) -> SentinelSpec | None:
    """The Sentinel settings, or None when ``TT_REDIS_SENTINELS`` is unset; half a setting fails."""
    raw = env.environ.get(SENTINELS_VAR) or None
    master = env.environ.get(SENTINEL_MASTER_VAR) or None
    password = env.environ.get(SENTINEL_PASSWORD_VAR) or None
    if raw is None:
        if master is not None or password is not None:
            raise ConfigError(f"{SENTINEL_MASTER_VAR} and {SENTINEL_PASSWORD_VAR} need {SENTINELS_VAR}")
        return None
    if master is None or not master.strip():
        raise ConfigError(f"{SENTINEL_MASTER_VAR} must name the master that {SENTINELS_VAR} watch")
    return SentinelSpec(parse_sentinels(raw), master.strip(), password)


@dataclass(frozen=True, slots=True)
class CommonSettings:
    """What every service reads: where Redis is, the key prefix, the state folder."""

    redis_url: str
    keys: Keys
    state_dir: Path
    run_ttl_s: int
    log_format: str
    log_level: str
    sentinel: SentinelSpec | None = None
    submit_replicas: int = 1
    """A submit is acknowledged once this many replicas have it (fewer if fewer are connected)."""
    submit_wait_ms: int = 500
    webhook_allowed_hosts: tuple[str, ...] = ()
    """``TT_WEBHOOK_ALLOWED_HOSTS``: hosts or CIDRs a webhook may target although they are
    loopback, private or link-local (and over plain http); empty: public https targets only."""
    """How long a submit waits for those replicas (``WAIT``) before answering 503."""

    @property
    def redis(self) -> RedisTarget:
        """What ``shared.redis_io.connect`` takes: the URL, or the Sentinels when they are set."""
        return RedisTarget(self.redis_url, self.sentinel)

    @classmethod
    def from_env(cls, env: Env | None = None) -> CommonSettings:
        env = env or Env()
        return cls(
            redis_url=env.environ.get("REDIS_URL") or env.text("REDIS_URL", DEFAULT_REDIS_URL),
            keys=Keys(env.text("PREFIX", "tt:")),
            state_dir=Path(env.text("STATE_DIR", ".state")).resolve(),
            run_ttl_s=env.integer("RUN_STREAM_TTL_S", 48 * 3600, minimum=1),
            log_format=env.text("LOG_FORMAT", "json"),
            log_level=env.text("LOG_LEVEL", "INFO").upper(),
            sentinel=sentinel_from_env(env),
            submit_replicas=env.integer("SUBMIT_REPLICAS", 1, minimum=0),
            submit_wait_ms=env.integer("SUBMIT_WAIT_MS", 500, minimum=1),
            webhook_allowed_hosts=tuple(
                h.strip() for h in env.text("WEBHOOK_ALLOWED_HOSTS", "").split(",") if h.strip()
            ),
        )
