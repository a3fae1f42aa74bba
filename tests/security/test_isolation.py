"""Auth and isolation against real processes: 401s that stop a browser, 404 for others' runs on
every route and filter, unguessable ids, and no token in any log or event.

Covered elsewhere (not repeated): 401 on submit, cookie CSRF and foreign Origin 403, 404 on the
main routes in-process (tests/gateway/test_isolation.py); per-user history pages
(tests/gateway/test_with_projector.py).
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from shared.ids import new_run_id
from tests.security.conftest import ALICE, BOB, Secured, bearer, secured_cluster

API = "/api/trading"
BODY = {"symbol": "AAPL", "analysts": ["market"]}


@pytest.fixture(scope="module", params=["tokens", "jwt"])
def secured(
    request: pytest.FixtureRequest, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Secured]:
    """Every test here runs against API-token users and against JWT users."""
    with secured_cluster(redis_url, tmp_path_factory, request.param) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def alices_run(secured: Secured) -> str:
    response = httpx.post(f"{secured.url}{API}/runs", json=BODY, headers=bearer(ALICE), timeout=10)
    assert response.status_code == 202, response.text
    run_id: str = response.json()["runId"]
    deadline = time.monotonic() + 20
    while not _listed(secured, ALICE, {}, run_id):  # the read model has it: filters can be checked
        assert time.monotonic() < deadline
        time.sleep(0.1)
    return run_id


def _listed(secured: Secured, token: str, params: dict[str, str], run_id: str) -> bool:
    for prefix in (API, f"{API}/decision"):
        page = httpx.get(f"{secured.url}{prefix}/runs", params=params, headers=bearer(token), timeout=10)
        assert page.status_code == 200, page.text
        if run_id in [r["runId"] for r in page.json()["runs"]]:
            return True
    return False


ROUTES = [
    ("GET", "{api}/runs/{id}", {}),
    ("GET", "{api}/runs/{id}", {"wait": "0.2"}),
    ("POST", "{api}/runs/{id}/wait", {"timeout": "0.2"}),
    ("GET", "{api}/runs/{id}/events", {}),
    ("GET", "{api}/runs/{id}/events", {"after": "0-0"}),
    ("DELETE", "{api}/runs/{id}", {}),
    ("GET", "{api}/decision/runs/{id}", {}),
    ("POST", "{api}/decision/runs/{id}/wait", {"timeout": "0.2"}),
    ("GET", "{api}/decision/runs/{id}/events", {}),
    ("DELETE", "{api}/decision/runs/{id}", {}),
    ("GET", "{api}/progress/{id}", {}),
    ("POST", "{api}/cancel/{id}", {}),
]


@pytest.mark.parametrize(("method", "path", "params"), ROUTES)
def test_another_users_run_is_404_on_every_route(
    secured: Secured, alices_run: str, method: str, path: str, params: dict[str, str]
) -> None:
    """Bob gets the same 404 problem for Alice's run as for a run that does not exist."""
    url = secured.url + path.format(api=API, id=alices_run)
    other = new_run_id()
    theirs = httpx.request(method, url, params=params, headers=bearer(BOB), timeout=10)
    unknown = httpx.request(method, url.replace(alices_run, other), params=params, headers=bearer(BOB))
    assert theirs.status_code == unknown.status_code == 404, theirs.text
    assert theirs.headers["content-type"] == "application/problem+json"
    assert theirs.text.replace(alices_run, "ID") == unknown.text.replace(other, "ID")  # no oracle
    mine = httpx.get(f"{secured.url}{API}/runs/{alices_run}", headers=bearer(ALICE), timeout=10).json()
    assert mine["status"] == "pending" and not mine["cancelRequested"]


@pytest.mark.parametrize(
    "params", [{}, {"symbol": "AAPL"}, {"status": "active"}, {"status": "pending"}, {"limit": "100"}]
)
def test_list_filters_never_show_another_users_run(
    secured: Secured, alices_run: str, params: dict[str, str]
) -> None:
    assert _listed(secured, ALICE, params, alices_run)
    assert not _listed(secured, BOB, params, alices_run)


def test_run_ids_are_unguessable() -> None:
    """96 random bits after the time prefix: no two alike, each hex digit near-uniform."""
    ids = [new_run_id() for _ in range(4000)]
    assert len(set(ids)) == len(ids)
    tails = "".join(i[12:] for i in ids)
    assert len(ids[0]) - 12 == 24  # 24 hex digits = 96 bits
    counts = Counter(tails)
    expected = len(tails) / 16
    chi2 = sum((counts[d] - expected) ** 2 / expected for d in "0123456789abcdef")
    assert chi2 < 60, chi2  # 15 degrees of freedom: p < 1e-6 for a fair source
    assert math.log2(16**24) == 96


def test_a_401_stops_an_eventsource_instead_of_letting_it_retry(secured: Secured, alices_run: str) -> None:
    """EventSource reconnects only after a good stream; a 401 problem+json (not text/event-stream,
    no ``retry:``) makes it fail for good. The same for a forged cookie."""
    url = f"{secured.url}{API}/runs/{alices_run}/events"
    for headers in ({}, bearer("not-a-token"), {"Cookie": "tt_session=forged.1.x.y"}):
        response = httpx.get(url, headers=headers, timeout=10)
        assert response.status_code == 401, headers
        assert response.headers["content-type"] == "application/problem+json"
        assert "retry:" not in response.text
        assert response.headers["www-authenticate"].startswith("Bearer")


def test_tokens_appear_in_no_log_and_no_event(secured: Secured, alices_run: str) -> None:
    """After authenticated submits, reads, SSE, a sign-in and failed attempts (DEBUG logging),
    neither token nor a session cookie is in any service log or any Redis key of this system."""
    signed = httpx.post(f"{secured.url}{API}/session", json={"token": BOB}, timeout=10)
    assert signed.status_code == 200
    cookie = signed.cookies["tt_session"]
    httpx.get(f"{secured.url}{API}/runs", headers={"Authorization": f"Bearer {ALICE}x"}, timeout=10)
    httpx.get(f"{secured.url}{API}/runs/{alices_run}", headers=bearer(ALICE), timeout=10)
    secrets = (ALICE, BOB, cookie, cookie.rsplit(".", 1)[0])
    logs = "".join(p.read_text(errors="replace") for p in secured.log_dir.glob("*.log"))
    assert logs and not [s for s in secrets if s in logs]
    for key in secured.redis.scan_iter(match=f"{secured.keys.prefix}*"):
        kind: Any = secured.redis.type(key)
        dump = repr(secured.redis.xrange(key)) if kind == b"stream" else repr(secured.redis.dump(key))
        assert not [s for s in secrets if s in dump], key
