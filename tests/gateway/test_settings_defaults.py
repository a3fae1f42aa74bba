"""Defaults that depend on other settings."""

from __future__ import annotations

from services.gateway.settings import GatewaySettings
from shared.config import Env


def test_sse_streams_per_user_are_capped_by_default_only_when_users_exist() -> None:
    assert GatewaySettings.from_env(Env({"TT_AUTH": "true"})).sse_max_per_user == 50
    assert GatewaySettings.from_env(Env({})).sse_max_per_user == 0
    explicit = Env({"TT_AUTH": "true", "TT_SSE_MAX_PER_USER": "7"})
    assert GatewaySettings.from_env(explicit).sse_max_per_user == 7
