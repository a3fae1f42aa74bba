"""Run ids: time-ordered for humans, 96 random bits so nobody can guess another's."""

from __future__ import annotations

import re
import secrets
import time

RUN_ID_PATTERN = re.compile(r"^[0-9a-f]{12}[0-9a-f]{24}$")


def new_run_id() -> str:
    """A fresh run id: 12 hex digits of milliseconds, then 24 random hex digits."""
    return f"{int(time.time() * 1000):012x}{secrets.token_hex(12)}"


def is_run_id(value: str) -> bool:
    return bool(RUN_ID_PATTERN.fullmatch(value))
