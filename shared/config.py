"""Reading settings from the environment: one place, typed, failing at start with the name."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
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


@dataclass(frozen=True, slots=True)
class CommonSettings:
    """What every service reads: where Redis is, the key prefix, the state folder."""

    redis_url: str
    keys: Keys
    state_dir: Path
    run_ttl_s: int
    log_format: str
    log_level: str

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
        )
