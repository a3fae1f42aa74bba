from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from services.runner.http_pool import model_client

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "market"


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    """The runner's own model client (its transport), as the pipelines get it in production."""
    async with model_client(64, environ={}) as client:
        yield client


@pytest.fixture
def market_dir() -> Path:
    return FIXTURES
