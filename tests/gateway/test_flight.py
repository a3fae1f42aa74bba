"""Single flight: one call for a burst of concurrent callers; errors and cancellation handled."""

from __future__ import annotations

import asyncio

import pytest

from services.gateway.flight import SingleFlight


async def test_concurrent_callers_share_one_call() -> None:
    flight: SingleFlight[int] = SingleFlight()
    calls = 0

    async def lookup() -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return calls

    results = await asyncio.gather(*(flight.run("run", lookup) for _ in range(100)))
    assert results == [1] * 100 and calls == 1
    assert await flight.run("run", lookup) == 2  # later callers make a fresh call


async def test_an_error_reaches_every_waiting_caller() -> None:
    flight: SingleFlight[int] = SingleFlight()

    async def broken() -> int:
        await asyncio.sleep(0.02)
        raise ConnectionError("redis down")

    results = await asyncio.gather(*(flight.run("run", broken) for _ in range(3)), return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)


async def test_a_cancelled_leader_hands_over_to_a_follower() -> None:
    flight: SingleFlight[str] = SingleFlight()
    started = asyncio.Event()

    async def slow() -> str:
        started.set()
        await asyncio.sleep(0.05)
        return "owner"

    leader = asyncio.create_task(flight.run("run", slow))
    await started.wait()
    follower = asyncio.create_task(flight.run("run", slow))
    await asyncio.sleep(0)
    leader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leader
    assert await asyncio.wait_for(follower, 2) == "owner"
