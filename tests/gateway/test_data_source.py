"""The page's start form says when runs get demo prices: /data names the default provider."""

from __future__ import annotations

import httpx
import pytest

from services.gateway.settings import GatewaySettings
from shared.config import ConfigError, Env
from tests.gateway.conftest import GatewayFactory

DATA = "/api/trading/data"


@pytest.mark.parametrize(("provider", "demo"), [("synthetic", True), ("csv", False), ("yfinance", False)])
async def test_data_names_the_default_provider_and_whether_it_is_demo_data(
    start_gateway: GatewayFactory, provider: str, demo: bool
) -> None:
    gateway = await start_gateway(data_provider=provider)
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
        answer = (await http.get(DATA)).json()
    assert answer["provider"] == provider and answer["demo"] is demo
    assert "synthetic" in answer["providers"]


def test_the_default_provider_is_read_from_the_runners_variable_and_checked() -> None:
    environ = {"TT_DATA_PROVIDER": "csv", "REDIS_URL": "redis://127.0.0.1:1/0"}
    assert GatewaySettings.from_env(Env(environ)).data_provider == "csv"
    assert GatewaySettings.from_env(Env({"REDIS_URL": "redis://127.0.0.1:1/0"})).data_provider == "synthetic"
    with pytest.raises(ConfigError, match="TT_DATA_PROVIDER"):
        GatewaySettings.from_env(Env({**environ, "TT_DATA_PROVIDER": "nasdaq"}))
