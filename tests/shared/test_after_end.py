"""Bookkeeping after the end (webhook attempts): appended only after a terminal event, folded
beside the finished run by both reducer paths, and the join key lives exactly while its run does."""

from __future__ import annotations

from redis.asyncio import Redis

from shared.events import RunCompleted, RunRequested, RunStarted, WebhookAttempted, WebhookSpec
from shared.ids import new_run_id
from shared.keys import Keys
from shared.reducer import apply_mut, fold
from shared.run_state import initial
from shared.store import EventStore, RefusalReason, Refused
from shared.submits import Joined, Submitted


def attempt(run_id: str, n: int, outcome: str) -> WebhookAttempted:
    return WebhookAttempted(
        run_id=run_id,
        webhook_id=f"msg_{run_id}",
        event_type="run.completed",
        attempt=n,
        outcome=outcome,  # type: ignore[arg-type]
    )


def request(run_id: str) -> RunRequested:
    return RunRequested(
        run_id=run_id, user_id="u", symbol="AAPL", model_id="offline", analysts=("market",),
        webhook=WebhookSpec(url="https://example.com/h"),
    )  # fmt: skip


async def test_an_attempt_is_refused_before_the_end_and_appended_after_it(redis: Redis, keys: Keys) -> None:
    store = EventStore(redis, keys)
    run_id = new_run_id()
    assert isinstance(await store.submit(request(run_id), webhook_secret="whsec_x"), Submitted)
    try:
        await store.append(attempt(run_id, 1, "retrying"))
        raise AssertionError("appended before the end")
    except Refused as refused:
        assert refused.reason is RefusalReason("queued")
    await store.append(RunStarted(run_id=run_id, runner_id="r", attempt=1, steps=()), fence="f")
    await store.append(RunCompleted(run_id=run_id), fence="f")
    await store.append(attempt(run_id, 1, "retrying"))
    await store.append(attempt(run_id, 2, "delivered"))
    state = await store.state(run_id)
    assert state is not None and state.status == "completed" and state.webhook is not None
    assert [(d.status, d.attempts) for d in state.deliveries] == [("delivered", 2)]
    assert await redis.get(keys.webhook_secret(run_id)) == b"whsec_x"
    mutated = initial(run_id)
    for entry_id, event in await store.read(run_id):
        apply_mut(mutated, event, entry_id)
    assert mutated == fold(run_id, await store.read(run_id))


async def test_join_is_answered_while_the_run_lives_and_not_after(redis: Redis, keys: Keys) -> None:
    store = EventStore(redis, keys)
    first, second, third = new_run_id(), new_run_id(), new_run_id()
    assert isinstance(await store.submit(request(first), join=("fp", True)), Submitted)
    assert await store.submit(request(second), join=("fp", True)) == Joined(first)
    assert await redis.xlen(keys.run(second)) == 0
    await store.append(RunStarted(run_id=first, runner_id="r", attempt=1, steps=()), fence="f")
    await store.append(RunCompleted(run_id=first), fence="f")
    assert not await redis.exists(keys.join("u", "fp"))
    assert isinstance(await store.submit(request(third), join=("fp", True)), Submitted)
