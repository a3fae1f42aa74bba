"""The LangGraph adapter in one process, on a real Redis: steps, progress, resume, cancel."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from redis.asyncio import Redis

from services.runner.graph.adapter import GraphPipeline, StepNames, progress_of
from services.runner.graph.checkpoint import RedisSaver
from shared.events import RunRequested
from shared.keys import Keys
from shared.pipeline_sdk import JsonOutput
from shared.results import StepOutput, Usage
from tests.pipelines import graphs


class Recorder:
    """A StepReporter that keeps what it is told (the runner's one appends events)."""

    def __init__(self) -> None:
        self.steps: list[str] = []
        self.progressed: list[tuple[str, float, str]] = []
        self.done: dict[str, StepOutput | None] = {}
        self.usage: dict[str, Usage] = {}

    async def started(self, step: str, index: int) -> None:
        self.steps.append(step)

    async def progress(self, step: str, fraction: float, message: str = "") -> None:
        self.progressed.append((step, fraction, message))

    async def completed(self, step: str, output: StepOutput | None, duration_s: float, usage: Usage) -> None:
        self.done[step] = output
        self.usage[step] = usage


@pytest.fixture(autouse=True)
def fresh_counts() -> Iterator[None]:
    graphs.RUNS.clear()
    graphs.FAIL_ONCE.clear()
    graphs.RELEASE.clear()
    yield
    graphs.RELEASE.set()


def request(run_id: str = "run-g1") -> RunRequested:
    return RunRequested(run_id=run_id, user_id="u", symbol="AAPL", model_id="m", analysts=("market",))


def pipeline(redis: Redis, graph: object) -> GraphPipeline:
    return GraphPipeline(graph, RedisSaver(redis, Keys(), ttl_s=600))  # type: ignore[arg-type]


async def test_each_node_execution_is_a_step_and_the_final_state_is_the_result(redis: Redis) -> None:
    recorder = Recorder()
    result = await pipeline(redis, graphs.loop_graph()).run(request(), {}, recorder, spent=Usage())
    steps = ["analyst", "debate", "debate#2", "debate#3", "decide"]
    assert recorder.steps == steps and list(recorder.done) == steps
    second_round = recorder.done["debate#2"]
    assert isinstance(second_round, JsonOutput) and second_round.task
    assert second_round.value == {"log": ["debate:AAPL"], "rounds": 2}
    assert ("analyst", 0.5, "analyst halfway") in recorder.progressed
    assert isinstance(result, JsonOutput)
    assert result.value["rounds"] == 3 and result.value["symbol"] == "AAPL"
    assert result.value["run_id"] == "run-g1" and "model_id" not in result.value  # not in the schema


async def test_a_resumed_run_never_reruns_a_completed_node(redis: Redis) -> None:
    graphs.FAIL_ONCE.add("decide")
    first = Recorder()
    with pytest.raises(RuntimeError, match="decide crashed"):
        await pipeline(redis, graphs.loop_graph()).run(request(), {}, first, spent=Usage())
    assert list(first.done) == ["analyst", "debate", "debate#2", "debate#3"]
    second = Recorder()  # a new process: a new compiled graph on the same Redis
    result = await pipeline(redis, graphs.loop_graph()).run(request(), first.done, second, spent=Usage())
    assert second.steps == ["decide"]  # the node in flight runs again, nothing before it
    assert graphs.RUNS == {"analyst": 1, "debate": 3, "decide": 2}
    assert isinstance(result, JsonOutput) and result.value["log"][-1] == "decide:AAPL"


class CrashAt(Recorder):
    """Dies as the runner would if killed after a node's writes were saved, before its StepCompleted."""

    def __init__(self, step: str, *, acknowledged: bool = False) -> None:
        super().__init__()
        self.crash_at, self.acknowledged = step, acknowledged

    async def completed(self, step: str, output: StepOutput | None, duration_s: float, usage: Usage) -> None:
        if step == self.crash_at and self.acknowledged:
            await super().completed(step, output, duration_s, usage)
        if step == self.crash_at:
            raise ConnectionError("killed")
        await super().completed(step, output, duration_s, usage)


async def test_a_node_saved_but_not_acknowledged_before_a_crash_completes_on_resume(redis: Redis) -> None:
    first = CrashAt("debate#2")
    with pytest.raises(ConnectionError):
        await pipeline(redis, graphs.loop_graph()).run(request(), {}, first, spent=Usage())
    second = Recorder()
    await pipeline(redis, graphs.loop_graph()).run(request(), first.done, second, spent=Usage())
    assert second.steps == ["debate#2", "debate#3", "decide"]  # debate#2 is acknowledged, not rerun
    assert graphs.RUNS == {"analyst": 1, "debate": 3, "decide": 1}
    acknowledged = second.done["debate#2"]
    assert isinstance(acknowledged, JsonOutput) and acknowledged.value == {
        "log": ["debate:AAPL"],
        "rounds": 2,
    }


async def test_a_node_acknowledged_just_before_a_crash_is_not_reported_twice(redis: Redis) -> None:
    first = CrashAt("debate#2", acknowledged=True)  # StepCompleted appended, the step's checkpoint not
    with pytest.raises(ConnectionError):
        await pipeline(redis, graphs.loop_graph()).run(request(), {}, first, spent=Usage())
    second = Recorder()
    await pipeline(redis, graphs.loop_graph()).run(request(), first.done, second, spent=Usage())
    assert second.steps == ["debate#3", "decide"]
    assert graphs.RUNS == {"analyst": 1, "debate": 3, "decide": 1}


async def test_cancel_stops_a_blocked_synchronous_node_within_a_second(redis: Redis) -> None:
    recorder = Recorder()
    task = asyncio.create_task(
        pipeline(redis, graphs.sleepy_graph()).run(request(), {}, recorder, spent=Usage())
    )
    while not recorder.steps:
        await asyncio.sleep(0.01)
    began = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    stopped_s = time.monotonic() - began
    graphs.RELEASE.set()  # the abandoned thread ends now, not at the loop's executor shutdown
    assert stopped_s < 1.0
    assert recorder.done == {}


def test_step_names_continue_after_the_steps_already_done() -> None:
    names = StepNames({"debate": None, "debate#2": None, "analyst": None})
    assert [names.next("debate"), names.next("trader"), names.next("debate")] == [
        "debate#3",
        "trader",
        "debate#4",
    ]


def test_stream_writer_payloads_become_progress() -> None:
    assert progress_of(0.25) == (0.25, "")
    assert progress_of("fetching") == (0.0, "fetching")
    assert progress_of({"progress": 2, "message": "m"}) == (1.0, "m")
    assert progress_of({"rows": 3}) == (0.0, '{"rows":3}')
