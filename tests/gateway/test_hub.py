"""The hub's fan-out order, its deltas and heartbeats, and the gateway process's GC tuning."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import subprocess
import sys
import tracemalloc
from collections.abc import AsyncIterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from services.gateway import hub as hub_module
from services.gateway.frames import HEARTBEAT, Frame, end_frame, make_frame, sse_frame
from services.gateway.hub import Hub, Listener, Watch
from shared.catalog import plan_steps
from shared.events import RunStarted, StepProgress, StepStarted
from shared.keys import Keys
from shared.redis_io import connect
from shared.reducer import apply
from shared.run_state import initial
from shared.statedelta import merge
from shared.store import Appends, EventStore
from tests.gateway.support import ANALYSTS, Runner, request_event

ROOT = Path(__file__).resolve().parents[2]


class Recorder:
    """A sink that notes, in one log shared by all of them, which sink took which frame."""

    def __init__(self, run_id: str, name: str, log: list[tuple[str, str]]) -> None:
        self.run_id, self.name, self.log = run_id, name, log
        self.dropped = False

    def offer(self, frame: Frame) -> bool:
        self.log.append((self.name, frame.kind))
        return True

    def replay(self, frames: list[Frame]) -> bool:
        return all(self.offer(frame) for frame in frames)

    def cut(self) -> None:
        self.dropped = True


@contextlib.asynccontextmanager
async def running_hub(redis_url: str, keys: Keys, process_id: str, **options: Any) -> AsyncIterator[Hub]:
    """A started hub on its own reader and command clients; stopped and closed on exit."""
    reader, commands = connect(redis_url, blocking=True), connect(redis_url)
    hub = Hub(reader, commands, EventStore(commands, keys), keys, process_id, **options)
    await hub.start()
    try:
        yield hub
    finally:
        await hub.stop()
        await reader.aclose()
        await commands.aclose()


async def test_frames_go_out_in_join_order_and_a_rejoin_goes_last(
    redis: Redis, redis_url: str, store: EventStore, keys: Keys, runner: Runner
) -> None:
    event = request_event("local")
    await store.submit(event)
    log: list[tuple[str, str]] = []
    sinks = {name: Recorder(event.run_id, name, log) for name in ("c", "a", "d", "b")}
    async with running_hub(redis_url, keys, "test-hub-order", block_ms=500) as hub:
        for sink in sinks.values():
            await hub.attach(sink)
        hub.leave(sinks["a"])
        await hub.attach(sinks["a"])  # back at the end of the line
        await runner.start(event.run_id)
        async with asyncio.timeout(5):
            while ("b", "RunStarted") not in log:
                await asyncio.sleep(0.02)
        live = [name for name, kind in log if kind == "RunStarted"]
        assert live == ["c", "d", "b", "a"]
        for sink in sinks.values():
            hub.leave(sink)
        assert hub.listeners == 0


def test_tune_gc_freezes_the_loaded_heap_and_raises_the_thresholds() -> None:
    probe = (
        "import gc, json; from services.gateway.__main__ import GC_THRESHOLDS, tune_gc; "
        "before = gc.get_freeze_count(); tune_gc(); "
        "print(json.dumps([before, gc.get_freeze_count(), gc.get_threshold(), GC_THRESHOLDS]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    before, frozen, threshold, wanted = json.loads(done.stdout)
    assert before == 0 and frozen > 10_000  # the modules, the app's classes: most of the heap
    assert threshold == wanted and threshold[0] > 700


async def test_heartbeats_only_on_silence_and_never_more_than_a_period_apart(
    redis: Redis, redis_url: str, store: EventStore, keys: Keys, runner: Runner
) -> None:
    event = request_event("local")
    await store.submit(event)
    period = 0.8
    log: list[tuple[str, str]] = []
    stamps: list[tuple[float, str]] = []
    sink = Recorder(event.run_id, "only", log)
    offer = sink.offer

    def timed(frame: Frame) -> bool:
        stamps.append((asyncio.get_running_loop().time(), frame.kind))
        return offer(frame)

    sink.offer = timed  # type: ignore[method-assign]
    async with running_hub(redis_url, keys, "test-hub-beat", block_ms=200, heartbeat_s=period) as hub:
        await hub.attach(sink)
        await runner.start(event.run_id)
        for k in range(16):  # busy: a frame every 0.1 s for 1.6 s, two periods
            await store.append(
                StepProgress(run_id=event.run_id, step="data_collection", progress=k / 16), fence="f1"
            )
            await asyncio.sleep(0.1)
        busy_until = asyncio.get_running_loop().time()
        await asyncio.sleep(2.6)  # then silent for over three periods
        hub.leave(sink)
    first_live = next(t for t, kind in stamps if kind == "RunStarted")
    busy = [kind for t, kind in stamps if first_live <= t <= busy_until]
    assert busy.count("StepProgress") == 16 and "heartbeat" not in busy
    beats = [t for t, kind in stamps if kind == "heartbeat" and t > busy_until]
    assert len(beats) >= 3
    times = [busy_until, *beats]
    assert max(b - a for a, b in pairwise(times)) <= period + 0.4  # never two periods


async def test_every_delta_merged_into_the_state_before_it_is_the_full_state_after_it(
    redis: Redis, redis_url: str, store: EventStore, keys: Keys, runner: Runner
) -> None:
    event = request_event("local")
    await store.submit(event)
    async with running_hub(redis_url, keys, "test-hub-delta", block_ms=200) as hub:
        listener = await hub.join(event.run_id, "0-0", maxsize=1000)
        await runner.run_all(event.run_id)
        async with asyncio.timeout(5):
            while not hub._watches[event.run_id].end:
                await asyncio.sleep(0.02)
        frames = hub._watches[event.run_id].frames
        hub.leave(listener)
    full = [json.loads(f.opening().data.split(b"data: ", 1)[1]) for f in frames]
    sent = [json.loads(f.data.split(b"data: ", 1)[1]) for f in frames]
    assert "state" in sent[0] and all("delta" in d for d in sent[1:])  # the terminal one too
    assert full[-1]["state"]["terminal"] and "result" in sent[-1]["delta"]
    for before, after, frame, data in zip(full[:-1], full[1:], frames[1:], sent[1:], strict=True):
        assert merge(before["state"], data["delta"], frame.id) == after["state"]
        assert data["event"] == after["event"] and set(data["event"]) <= {"type", "step"}
    steps = [d["event"].get("step") for d in sent if d["event"]["type"].startswith("Step")]
    assert steps and all(steps), "a step's event frame names its step"


async def test_a_listener_too_slow_for_a_batch_is_dropped_and_the_rest_get_the_batch(
    redis_url: str, redis: Redis, keys: Keys
) -> None:
    """Events appended in one step reach the hub as one read (a batch): each listener whose queue
    is full is cut there and counted once (two here), and the others get the whole batch."""
    store = EventStore(redis, keys)
    event = request_event("local")
    await store.submit(event)
    run_id, steps = event.run_id, plan_steps(ANALYSTS)
    async with running_hub(redis_url, keys, "batch-hub", block_ms=500) as hub:
        slow, slower = [await hub.join(run_id, "0-0", maxsize=1) for _ in range(2)]
        fast = await hub.join(run_id, "0-0", maxsize=100)
        async with asyncio.timeout(5):
            while len(fast.frames) < 1:  # the RunRequested: the slow listener's queue is full
                await asyncio.sleep(0.02)
        started = RunStarted(run_id=run_id, runner_id="r", attempt=1, steps=steps)
        first = StepStarted(run_id=run_id, step=steps[0], index=0)
        await store.append_batch([Appends((started, first), fence="f1")])
        async with asyncio.timeout(5):
            while len(fast.frames) < 2:
                await asyncio.sleep(0.02)
        assert slow.dropped and slower.dropped and hub.dropped == 2 and not fast.dropped
        assert sorted(task.get_name() for task in hub._tasks) == ["sse-heartbeat", "sse-hub"]  # task dumps
        assert [f.final for f in slow.frames] == [True]
        batch = fast.frames[1]
        assert batch.data.count(b"id: ") == 2  # both events, as one queued frame
        for listener in (slow, slower, fast):
            hub.leave(listener)
        assert hub.listeners == 0


async def test_a_followed_run_keeps_about_its_frames_bytes_not_a_state_view_per_frame(
    redis_url: str, store: EventStore, keys: Keys, runner: Runner
) -> None:
    """What the hub keeps per followed run bounds the gateway's RSS under 10,000 watchers over
    1,000 live runs (docs/benchmarks.md, row 8): the encoded frames and the events, not a view
    of the state per frame."""
    event = request_event("local")
    await store.submit(event)
    await runner.run_all(event.run_id)
    entries = await store.read(event.run_id)
    reader, commands = connect(redis_url, blocking=True), connect(redis_url)
    hub = Hub(reader, commands, store, keys, "test-hub-memory")  # not started: folded by hand
    watch = Watch(event.run_id, keys.run(event.run_id))
    tracemalloc.start()
    try:
        for entry_id, entry in entries:
            hub._fold(watch, entry_id, entry)
        kept = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
        await reader.aclose()
        await commands.aclose()
    assert watch.end is not None and len(watch.frames) == len(entries)
    assert kept < 4 * sum(len(frame.data) for frame in watch.frames)


async def test_a_waiting_listener_is_a_few_hundred_bytes() -> None:
    """Each of 10,000 watchers on one gateway process holds a listener while it waits for the
    next frame (docs/benchmarks.md, row 8): its queue, empty then, must not cost a deque's
    ~600-byte first block (fails at ~760 bytes a listener with one)."""
    n = 1000
    tracemalloc.start()
    try:
        listeners = [Listener("run", "0-0", 100) for _ in range(n)]
        for listener in listeners:  # a frame in and out, as a client's first heartbeat
            assert listener.offer(HEARTBEAT)
            assert await listener.drain() == (HEARTBEAT.data, False)
        kept = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert all(not listener.frames for listener in listeners)
    assert kept / n < 300, kept / n


async def test_a_resume_at_an_event_the_hub_reads_after_the_join_gets_only_the_later_ones(
    redis_url: str, redis: Redis, store: EventStore, keys: Keys, runner: Runner
) -> None:
    """A client resuming at an event this gateway has not read yet (it saw it through another
    gateway): the hub's live frame of that very event is skipped, neither sent twice nor taken for
    a full queue (kills ``Listener.offer``'s ``<=`` → ``<`` and its ``return True`` → ``False``)."""
    event = request_event("local")
    await store.submit(event)
    [(seen, _)] = await redis.xrange(keys.run(event.run_id))
    async with running_hub(redis_url, keys, "resume-hub", block_ms=200) as hub:
        listener = await hub.join(event.run_id, seen.decode(), maxsize=16)
        async with asyncio.timeout(5):  # the hub's first read: that event, alone
            while not hub._watches[event.run_id].frames:
                await asyncio.sleep(0.02)
        started = await runner.start(event.run_id)
        data, final = await asyncio.wait_for(listener.drain(), 5)
        await runner.step(event.run_id, plan_steps(ANALYSTS)[0], 0)
        later, _ = await asyncio.wait_for(listener.drain(), 5)
        hub.leave(listener)
    assert not listener.dropped and not final
    assert re.findall(rb"^id: (.+)$", data, re.MULTILINE) == [started.encode()]
    assert json.loads(data.split(b"data: ", 1)[1])["state"]["status"] == "running"  # a first frame: full
    # primed by it: the frames after carry only the changes
    assert all("delta" in json.loads(part.split(b"data: ", 1)[1]) for part in later.split(b"\n\n") if part)


async def test_a_hung_up_listener_ends_its_stream_even_with_a_frame_queued_after_the_hang_up() -> None:
    """The hub may queue a frame between the client's disconnect and the pump's next read: the
    read still ends the stream (else the pump waits on, holding the user's stream slot)."""
    listener = Listener("run", "0-0", maxsize=4)
    listener.hang_up()
    assert listener.offer(make_frame("1-0", "StepProgress", b"id: 1-0\n\n"))
    data, final = await asyncio.wait_for(listener.drain(), 5)
    assert final and b"1-0" not in data


async def test_a_listener_whose_first_frames_come_as_a_batch_gets_the_full_state_first(
    redis_url: str, redis: Redis, keys: Keys
) -> None:
    """A client resuming at the latest event, then two events appended in one step: the first
    frame it gets carries the whole state, not a delta of a state it never had."""
    store = EventStore(redis, keys)
    event = request_event("local")
    await store.submit(event)
    [(seen, _)] = await redis.xrange(keys.run(event.run_id))
    run_id, steps = event.run_id, plan_steps(ANALYSTS)
    async with running_hub(redis_url, keys, "batch-first-hub", block_ms=200) as hub:
        async with asyncio.timeout(5):  # the run already followed: the join replays nothing new
            watcher = await hub.join(run_id, "0-0", maxsize=16)
            while not hub._watches[run_id].frames:
                await asyncio.sleep(0.02)
        listener = await hub.join(run_id, seen.decode(), maxsize=16)
        started = RunStarted(run_id=run_id, runner_id="r", attempt=1, steps=steps)
        first = StepStarted(run_id=run_id, step=steps[0], index=0)
        await store.append_batch([Appends((started, first), fence="f1")])
        data, _ = await asyncio.wait_for(listener.drain(), 5)
        for sink in (watcher, listener):
            hub.leave(sink)
    frames = [json.loads(part.split(b"data: ", 1)[1]) for part in data.split(b"\n\n") if part]
    assert [f["event"]["type"] for f in frames] == ["RunStarted", "StepStarted"]
    assert frames[0]["state"]["status"] == "running" and "delta" in frames[1]


async def test_the_hub_between_a_join_and_its_first_read_knows_no_owner_and_skips_unwatched_runs(
    redis_url: str, keys: Keys
) -> None:
    """A run joined but not read yet has no frames: its owner is unknown here ("", so the caller
    asks Redis), not an error; entries of a run no longer watched are ignored, not an error."""
    async with running_hub(redis_url, keys, "edge-hub", block_ms=200) as hub:
        hub._watches["joined"] = Watch("joined", keys.run("joined"))
        assert hub.owner("joined") == "" and hub.owner("never") == ""
        hub._on_entries(keys.run("gone"), [("1-0", {b"e": b"{}"})])
        assert "gone" not in hub._watches


def test_frames_without_an_id_carry_no_id_line() -> None:
    """An empty ``id:`` line would clear a browser's Last-Event-ID (the end and reset frames)."""
    state = apply(initial("r"), request_event("local"), "1-0")
    assert b"id:" not in end_frame(state).data
    assert b"id:" not in sse_frame("reset", {"state": {}})


async def test_the_first_frame_names_its_event_and_the_last_watchers_leave_stops_the_reads(
    redis_url: str, store: EventStore, keys: Keys, runner: Runner
) -> None:
    """A run's first frame carries the event beside the full state, as a delta frame does; once
    nobody watches a run, the hub no longer reads its stream (nor keeps its frames)."""
    event = request_event("local")
    await store.submit(event)
    async with running_hub(redis_url, keys, "test-hub-leave", block_ms=200) as hub:
        listener = await hub.join(event.run_id, "0-0", 10)
        await runner.start(event.run_id)
        data, _ = await asyncio.wait_for(listener.drain(), 5)
        while b"RunStarted" not in data:
            more, _ = await asyncio.wait_for(listener.drain(), 5)
            data += more
        first, second = (json.loads(line[6:]) for line in data.split(b"\n") if line.startswith(b"data: "))
        assert first["event"] == {"type": "RunRequested"} and first["state"]["runId"] == event.run_id
        assert second["event"] == {"type": "RunStarted"} and "delta" in second
        assert keys.run(event.run_id) in hub.streams
        hub.leave(listener)
        assert keys.run(event.run_id) not in hub.streams and hub.listeners == 0


async def test_an_idle_hub_blocks_in_its_read_instead_of_polling(redis_url: str, keys: Keys) -> None:
    """The multiplexer is given the hub's ``block_ms``: an idle gateway waits in one XREAD, it
    does not spin on Redis (a non-blocking read comes back at once, hundreds of times a second)."""
    async with running_hub(redis_url, keys, "test-hub-idle", block_ms=1000) as hub:
        await asyncio.sleep(1.5)
        assert hub.rounds <= 5  # a blocking read ends each second at most


class BeatClock:
    """The hub's ``time`` and ``asyncio`` as its heartbeat timer sees them: each sleep it asks
    for is recorded, and returns when the test sets the clock to the next instant."""

    def __init__(self) -> None:
        self.now = 100.0
        self.asked: asyncio.Queue[float] = asyncio.Queue()
        self.ticks: asyncio.Queue[float] = asyncio.Queue()

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        await self.asked.put(delay)
        self.now = await self.ticks.get()

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)  # everything but ``sleep`` is asyncio's own


async def test_the_heartbeat_is_checked_four_times_a_period_and_sent_after_three_quarters_of_silence(
    redis_url: str, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a hand-set clock (no timing): the timer wakes every ``heartbeat_s / 4`` and sends a
    heartbeat to a run silent for 3/4 of ``heartbeat_s`` or more, not sooner, so no client goes
    a whole period without a byte and a busy run gets none."""
    clock = BeatClock()
    monkeypatch.setattr(hub_module, "time", clock)
    monkeypatch.setattr(hub_module, "asyncio", clock)
    log: list[tuple[str, str]] = []
    reader, commands = connect(redis_url, blocking=True), connect(redis_url)
    hub = Hub(reader, commands, EventStore(commands, keys), keys, "beat-clock", heartbeat_s=4.0)
    await hub.attach(Recorder("quiet", "quiet", log))
    hub._watches["quiet"].sent_at = 100.0
    beat = asyncio.create_task(hub._beat())
    try:
        assert await clock.asked.get() == 1.0
        for now, beats in ((102.9, 0), (103.0, 1), (104.0, 1), (105.9, 1), (106.0, 2)):
            await clock.ticks.put(now)
            assert await clock.asked.get() == 1.0
            assert log.count(("quiet", "heartbeat")) == beats, f"at {now}"
    finally:
        beat.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beat
        await reader.aclose()
        await commands.aclose()
