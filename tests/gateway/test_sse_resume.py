"""SSE guarantees at the HTTP level, asserted only on the event IDs and statuses a client sees (so
they hold whatever the hub's framing): an exact resume while another client already follows the
run on this gateway, a fast 404 for another user's run, and a cancel-before-start that frees the
user's slot and ends the stream."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable

import httpx
from redis.asyncio import Redis

from services.gateway.flight import SingleFlight
from services.gateway.runtime import Runtime
from shared.keys import Keys
from shared.store import Entry
from tests.gateway.conftest import GatewayFactory
from tests.gateway.support import BODY, RUNS, Runner, SseLog, read_sse, stream_ids

ALICE, BOB = "alice-token-1", "bob-token-2"
FAST_S = 5.0
"""A refused SSE request answers within this (a leak would stream, or hang until the test timeout)."""


async def _submit(http: httpx.AsyncClient, headers: dict[str, str] | None = None) -> str:
    response = await http.post(RUNS, json=BODY, headers=headers or {})
    assert response.status_code == 202, response.text
    run_id: str = response.json()["runId"]
    return run_id


async def _follow(
    http: httpx.AsyncClient,
    run_id: str,
    log: SseLog,
    last_id: str = "",
    headers: dict[str, str] | None = None,
) -> SseLog:
    resume = {"Last-Event-ID": last_id} if last_id else {}
    async with (
        asyncio.timeout(15),
        http.stream("GET", f"{RUNS}/{run_id}/events", headers={**resume, **(headers or {})}) as r,
    ):
        assert r.status_code == 200, await r.aread()
        await read_sse(r, log)
    return log


async def _until(log: SseLog, count: int) -> None:
    async with asyncio.timeout(10):
        while len(log.ids) < count:
            await asyncio.sleep(0.02)


async def test_a_resume_while_another_client_follows_gets_exactly_the_later_events(
    client: httpx.AsyncClient, runner: Runner, redis: Redis, keys: Keys
) -> None:
    """Kills: an off-by-one (``<`` for ``<=``, or no filter) in the replay a listener joining a run
    already followed on this gateway gets (services/gateway/hub.py ``attach``/``replay``)."""
    run_id = await _submit(client)
    await runner.start(run_id)
    await runner.step(run_id, "data_collection", 0)
    first = SseLog()
    following = asyncio.create_task(_follow(client, run_id, first))
    await _until(first, 5)  # the hub now holds this run's frames in memory
    ids = stream_ids(await redis.xrange(keys.run(run_id)))
    cursors = (ids[0], ids[2], ids[-1])
    logs = [SseLog() for _ in cursors]
    resuming = [
        asyncio.create_task(_follow(client, run_id, log, last_id=cursor))
        for log, cursor in zip(logs, cursors, strict=True)
    ]
    await _until(logs[0], len(ids) - 1)
    await runner.step(run_id, "analyst:market", 1)
    await runner.complete(run_id)
    await asyncio.gather(following, *resuming)
    whole = stream_ids(await redis.xrange(keys.run(run_id)))
    assert first.ids == whole
    for log, cursor in zip(logs, cursors, strict=True):
        assert log.ids == [i for i in whole if i > cursor], cursor
        assert log.events[-1] == "end"


async def test_a_resume_at_the_first_event_a_trim_kept_gets_no_reset(
    client: httpx.AsyncClient, runner: Runner, redis: Redis, keys: Keys
) -> None:
    """The client has the first retained event, so it lost nothing: the later events, no reset
    (the reset is for a client whose next event is gone; it also costs a read-model lookup)."""
    run_id = await _submit(client)
    await runner.start(run_id)
    await runner.step(run_id, "data_collection", 0)
    await redis.xtrim(keys.run(run_id), maxlen=2, approximate=False)  # RunRequested is gone
    kept = stream_ids(await redis.xrange(keys.run(run_id)))
    log = SseLog()
    following = asyncio.create_task(_follow(client, run_id, log, last_id=kept[0]))
    await _until(log, len(kept) - 1)
    await runner.complete(run_id)
    await following
    assert "reset" not in log.events
    assert log.ids[: len(kept) - 1] == kept[1:]


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _status_of_events(http: httpx.AsyncClient, run_id: str, headers: dict[str, str]) -> int:
    async with asyncio.timeout(FAST_S), http.stream("GET", f"{RUNS}/{run_id}/events", headers=headers) as r:
        if r.status_code == 404:  # the problem names the run asked for
            assert run_id in json.loads(await r.aread())["detail"]
        return r.status_code


async def test_another_users_run_on_the_sse_route_is_404_at_once(start_gateway: GatewayFactory) -> None:
    """Kills: the owner check of ``stream_events`` skipped, for a run nobody follows here and for
    one its owner follows (the hub's cached owner): a 200 stream, caught at once, not as a hang."""
    tokens = {hashlib.sha256(t.encode()).hexdigest(): u for t, u in ((ALICE, "alice"), (BOB, "bob"))}
    gateway = await start_gateway(auth=True, api_tokens=tokens, high_priority_users=frozenset())
    async with httpx.AsyncClient(base_url=gateway.url, timeout=FAST_S) as http:
        run_id = await _submit(http, _bearer(ALICE))
        assert await _status_of_events(http, run_id, _bearer(BOB)) == 404
        alice = SseLog()
        following = asyncio.create_task(_follow(http, run_id, alice, headers=_bearer(ALICE)))
        await _until(alice, 1)
        assert await _status_of_events(http, run_id, _bearer(BOB)) == 404
        assert (await http.delete(f"{RUNS}/{run_id}", headers=_bearer(ALICE))).status_code == 202
        await following
        assert alice.events[-1] == "end"


async def test_a_run_cancelled_while_queued_frees_the_users_slot_and_ends_its_stream(
    start_gateway: GatewayFactory,
) -> None:
    """Kills: a cancel of a queued run that leaves it queued or in the user's active set (the
    append script's ``cancel`` rule): the next submit would answer 429 and the stream stay open."""
    gateway = await start_gateway(max_active_runs=1)
    async with httpx.AsyncClient(base_url=gateway.url, timeout=FAST_S) as http:
        run_id = await _submit(http)
        assert (await http.post(RUNS, json=BODY)).status_code == 429
        assert (await http.delete(f"{RUNS}/{run_id}")).status_code == 202
        log = await _follow(http, run_id, SseLog())
        assert log.events == ["RunRequested", "RunCancelled", "end"]
        await _submit(http)


async def test_the_per_user_stream_cap_counts_each_user_apart_and_frees_a_slot_at_the_end(
    start_gateway: GatewayFactory,
) -> None:
    """Kills: a slot taken or given back under another name than the stream's owner (the cap
    would then be one counter for everybody, or never free). In-process; the cap's 429 itself
    against a real gateway process: tests/security/test_limits_and_input.py."""
    tokens = {hashlib.sha256(t.encode()).hexdigest(): u for t, u in ((ALICE, "alice"), (BOB, "bob"))}
    gateway = await start_gateway(
        auth=True, api_tokens=tokens, high_priority_users=frozenset(), sse_max_per_user=1
    )
    async with httpx.AsyncClient(base_url=gateway.url, timeout=FAST_S) as http:
        alices, bobs = await _submit(http, _bearer(ALICE)), await _submit(http, _bearer(BOB))
        alice = SseLog()
        following = asyncio.create_task(_follow(http, alices, alice, headers=_bearer(ALICE)))
        await _until(alice, 1)
        assert await _status_of_events(http, alices, _bearer(ALICE)) == 429  # her one slot is taken
        bob = SseLog()
        bob_follows = asyncio.create_task(_follow(http, bobs, bob, headers=_bearer(BOB)))
        await _until(bob, 1)  # not counted against alice's slot
        assert (await http.delete(f"{RUNS}/{alices}", headers=_bearer(ALICE))).status_code == 202
        await following  # her stream ended: the slot is hers again
        assert await _status_of_events(http, alices, _bearer(ALICE)) == 200
        assert (await http.delete(f"{RUNS}/{bobs}", headers=_bearer(BOB))).status_code == 202
        await bob_follows


class _GatedFlight(SingleFlight[list[Entry]]):
    """The gateway's single flight, its Redis reads held until ``expected`` opens are in it: the
    opens then overlap for certain, whatever the machine's speed."""

    def __init__(self, expected: int) -> None:
        super().__init__()
        self.expected, self.entered, self.gate = expected, 0, asyncio.Event()

    async def run(self, key: str, call: Callable[[], Awaitable[list[Entry]]]) -> list[Entry]:
        self.entered += 1
        if self.entered >= self.expected:
            self.gate.set()

        async def gated() -> list[Entry]:
            await self.gate.wait()
            return await call()

        return await super().run(key, gated)


async def test_concurrent_opens_of_two_users_runs_each_get_their_own_run(
    start_gateway: GatewayFactory,
) -> None:
    """Kills: the first-event read shared under another key than the run's (``stream_events``'s
    single flight): Bob's open, overlapping Alice's, would get her run's first event, so her
    owner, and a 404 for his own run."""
    tokens = {hashlib.sha256(t.encode()).hexdigest(): u for t, u in ((ALICE, "alice"), (BOB, "bob"))}
    gateway = await start_gateway(auth=True, api_tokens=tokens, high_priority_users=frozenset())
    runtime: Runtime = gateway.app.state.runtime
    async with httpx.AsyncClient(base_url=gateway.url, timeout=FAST_S) as http:
        alices, bobs = await _submit(http, _bearer(ALICE)), await _submit(http, _bearer(BOB))
        runtime.lookups = flight = _GatedFlight(expected=2)
        statuses = await asyncio.gather(
            _status_of_events(http, alices, _bearer(ALICE)), _status_of_events(http, bobs, _bearer(BOB))
        )
        assert flight.entered == 2
        assert list(statuses) == [200, 200]
