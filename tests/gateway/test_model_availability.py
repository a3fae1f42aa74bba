"""Honest choices: /models says which models can run here, and a submit naming one that cannot
is refused with the variable it lacks instead of being accepted and failing later."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from shared.keys import Keys
from tests.gateway.conftest import GatewayFactory
from tests.gateway.support import BODY, RUNS

MODELS = "/api/trading/models"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # nothing listens on it once the socket is closed


async def _models(client: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    response = await client.get(MODELS)
    assert response.status_code == 200
    return {m["id"]: m for m in response.json()["models"]}


async def test_models_without_their_key_are_unavailable_and_say_which_variable(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    models = await _models(client)
    assert models["offline"]["available"] is True and models["offline"]["reason"] is None
    gpt = models["gpt-4o-mini"]
    assert gpt["available"] is False and "OPENAI_API_KEY" in gpt["reason"]
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    assert (await _models(client))["gpt-4o-mini"]["available"] is True


async def test_submit_naming_an_unavailable_model_is_422_naming_the_variable(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, redis: Redis, keys: Keys
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    response = await client.post(RUNS, json={**BODY, "modelId": "gpt-4o-mini"})
    assert response.status_code == 422 and response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["field"] == "modelId" and "OPENAI_API_KEY" in problem["detail"]
    assert await redis.xlen(keys.queue) == 0  # never accepted
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    assert (await client.post(RUNS, json={**BODY, "modelId": "gpt-4o-mini"})).status_code == 202


async def test_a_keyless_local_endpoint_is_available_only_while_something_listens(
    start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    registry = tmp_path / "models.toml"
    registry.write_text(
        f'[models.up]\nprovider = "openai"\nbase_url = "http://127.0.0.1:{port}/v1"\nmodel = "m"\n'
        f'[models.down]\nprovider = "openai"\nbase_url = "http://127.0.0.1:{_closed_port()}/v1"\n'
        'model = "m"\n'
    )
    gateway = await start_gateway(models_path=str(registry))
    try:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as client:
            models = await _models(client)
            assert models["up"]["available"] is True
            assert models["down"]["available"] is False and "nothing is listening" in models["down"]["reason"]
            refused = await client.post(RUNS, json={**BODY, "modelId": "down"})
            assert refused.status_code == 422 and refused.json()["field"] == "modelId"
    finally:
        server.close()
        await server.wait_closed()
