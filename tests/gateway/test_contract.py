"""The published ``/openapi.json`` and the server agree on what ``POST /runs`` accepts.

Every body schemathesis generates from the published schema is accepted; for every constraint the
schema states on ``RunRequest`` (pattern, enum, bounds, lengths, uniqueness, required fields, no
additional properties) a body breaking just that constraint is a 422 problem naming the field.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.support.processes import ServiceProcess

RUNS = "/api/trading/runs"
BASE_BODY: dict[str, Any] = {"symbol": "AAPL", "analysts": ["market"]}


@pytest.fixture(scope="module")
def gateway_process(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    state = tmp_path_factory.mktemp("contract")
    env = {
        "REDIS_URL": redis_url,
        "TT_STATE_DIR": str(state),
        "TT_PROJECTOR_URL": "http://127.0.0.1:9",
        "TT_MAX_ACTIVE_RUNS": "0",
        "TT_SUBMIT_RATE": "0/min",
        "TT_HIGH_PRIORITY_USERS": "local",  # priority "high" is a permission, not a shape
    }
    with ServiceProcess("gateway", env, log_dir=Path(state)) as process:
        yield process


@pytest.fixture(scope="module")
def published(gateway_process: ServiceProcess) -> dict[str, Any]:
    doc: dict[str, Any] = httpx.get(f"{gateway_process.url}/openapi.json", timeout=10).json()
    return doc


@pytest.mark.usefixtures("no_gc_during_parsing")
def test_every_body_the_schema_allows_is_accepted(gateway_process: ServiceProcess) -> None:
    schema = schemathesis.openapi.from_url(f"{gateway_process.url}/openapi.json")
    operation = schema[RUNS]["POST"]
    answers: list[int] = []

    @given(case=operation.as_strategy(schemathesis.GenerationMode.POSITIVE))
    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def call(case: Any) -> None:
        case.headers = {**(case.headers or {}), "Idempotency-Key": uuid.uuid4().hex}  # keys never collide
        response = case.call(base_url=gateway_process.url, timeout=10)
        assert response.status_code in (200, 202, 429), (case.body, response.text)
        # an identical body joins the pending run it made (200, joined): a run all the same
        answers.append(202 if response.json().get("joined") else response.status_code)

    call()
    assert answers.count(202) >= 100


def _branch(prop: dict[str, Any]) -> dict[str, Any]:
    """A nullable property's non-null schema (pydantic writes ``anyOf: [{...}, {type: null}]``)."""
    branches = [b for b in prop.get("anyOf", [prop]) if b.get("type") != "null"]
    return branches[0]


def _breaking(schema: dict[str, Any]) -> Iterator[tuple[str, Any, str]]:
    """(keyword, value breaking it, the field suffix the problem names) for each stated constraint."""
    if "enum" in schema:
        yield "enum", "not-a-member", ""
    if "pattern" in schema:
        bad = next(c for c in ("has space", "..", "-X", "\u00e9") if not re.search(schema["pattern"], c))
        yield "pattern", bad, ""
    if "minLength" in schema:
        yield "minLength", "", ""
    if "maxLength" in schema:
        yield "maxLength", "A" * (schema["maxLength"] + 1), ""
    for keyword, step in (("minimum", -1), ("maximum", 1)):
        if keyword in schema:
            yield keyword, schema[keyword] + step, ""
    for keyword in ("exclusiveMinimum", "exclusiveMaximum"):
        if keyword in schema:
            yield keyword, schema[keyword], ""
    if schema.get("type") in ("integer", "number", "array"):
        yield "type", "1", ""
    if schema.get("type") == "array":
        yield from _breaking_list(schema)


def _breaking_list(schema: dict[str, Any]) -> Iterator[tuple[str, Any, str]]:
    members: list[Any] = schema["items"].get("enum", ["x"])
    if "minItems" in schema:
        yield "minItems", [], ""
    if "maxItems" in schema:
        yield "maxItems", [*members, members[0]], ""
    if schema.get("uniqueItems"):
        yield "uniqueItems", [members[0], members[0]], ""
    if "enum" in schema["items"]:
        yield "items.enum", ["not-a-member"], "[0]"


def _violations(published: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], str]]:
    model = published["components"]["schemas"]["RunRequest"]
    for name, prop in model["properties"].items():
        for keyword, value, suffix in _breaking(_branch(prop)):
            yield f"{name} {keyword}", {**BASE_BODY, name: value}, name + suffix
    for name in model["required"]:
        yield f"{name} required", {k: v for k, v in BASE_BODY.items() if k != name}, name
    if model.get("additionalProperties") is False:
        yield "additionalProperties", {**BASE_BODY, "colour": "red"}, "colour"


def test_the_stated_constraints_are_the_enforced_ones(
    gateway_process: ServiceProcess, published: dict[str, Any]
) -> None:
    model = published["components"]["schemas"]["RunRequest"]
    assert model["additionalProperties"] is False and set(model["required"]) == {"symbol", "analysts"}
    assert "offline" in model["properties"]["modelId"]["enum"]
    assert _branch(model["properties"]["analysts"])["uniqueItems"] is True
    cases = list(_violations(published))
    assert len(cases) >= 25, [c[0] for c in cases]
    with httpx.Client(base_url=gateway_process.url, timeout=10) as http:
        for label, body, field in cases:
            response = http.post(RUNS, json=body)
            assert response.status_code == 422, (label, body, response.text)
            assert response.headers["content-type"] == "application/problem+json"
            assert response.json()["field"] == field, (label, response.json())
        key_rule = published["paths"][RUNS]["post"]["parameters"][0]
        assert key_rule["name"] == "Idempotency-Key"
        refused = http.post(RUNS, json=BASE_BODY, headers={"Idempotency-Key": "has space"})
        assert refused.status_code == 422 and refused.json()["field"] == "Idempotency-Key"


def test_the_synchronous_wait_bound_is_published_and_enforced(
    gateway_process: ServiceProcess, published: dict[str, Any]
) -> None:
    params = published["paths"]["/api/trading/decision/internal"]["post"]["parameters"]
    wait = next(p for p in params if p["name"] == "wait")["schema"]
    assert wait["maximum"] == 600  # TT_SYNC_WAIT_MAX_S defaults to the run deadline
    url = f"{gateway_process.url}/api/trading/decision/internal"
    over = httpx.post(url, json=BASE_BODY, params={"wait": wait["maximum"] + 1}, timeout=10)
    assert over.status_code == 422 and over.json()["field"] == "wait"
    at_bound_quickly = httpx.post(url, json=BASE_BODY, params={"wait": 0}, timeout=10)
    assert at_bound_quickly.status_code == 202
