"""Any LangGraph ``StateGraph`` as a Tickertape pipeline: one step per node execution.

The graph is compiled with Tickertape's Redis checkpointer, thread id = run id, and streamed with
``durability="sync"``. A node is reported done only once its writes are durable in Redis, so a
taken-over run resumes (``astream(None)`` on the same thread) after the last completed node:
completed nodes never run again, the node in flight at a crash runs again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

import msgspec
from langchain_core.runnables import RunnableConfig
from langgraph.graph import StateGraph
from langgraph.graph.state import CompiledStateGraph

from services.runner.graph.checkpoint import RedisSaver
from services.runner.graph.metering import UsageMeter
from shared.pipeline_sdk import JsonOutput, PipelineError, RunRequested, StepOutput, StepReporter, Usage

logger = logging.getLogger(__name__)

DURABLE_WAIT_S = 10.0
"""How long a finished node's writes may take to reach Redis before the run is retried."""
RECURSION_LIMIT = 500
"""Super-steps a run may take: debates and tool loops repeat nodes many times."""
REQUEST_KEYS = ("symbol", "analysts", "model_id", "options", "run_id")


def as_graph(obj: Any) -> StateGraph[Any] | None:
    """The StateGraph ``obj`` is, compiles to, or returns when called with no arguments."""
    if isinstance(obj, CompiledStateGraph):
        obj = obj.builder
    if isinstance(obj, StateGraph):
        return obj
    return None


class StepNames:
    """``node``, ``node#2``, ``node#3``…: numbering continues after the steps already done."""

    def __init__(self, done: Mapping[str, object]) -> None:
        self.count: Counter[str] = Counter()
        for step in done:
            node, _, nth = step.partition("#")
            self.count[node] = max(self.count[node], int(nth) if nth.isdigit() else 1)

    def next(self, node: str) -> str:
        self.count[node] += 1
        n = self.count[node]
        return node if n == 1 else f"{node}#{n}"


class GraphPipeline:
    """Runs one StateGraph for every run that names it."""

    def __init__(self, graph: StateGraph[Any], saver: RedisSaver) -> None:
        self.saver = saver
        self.graph = graph.compile(checkpointer=saver)
        # the input schema's channels (no JSON schema: pydantic cannot build one for a
        # typing.TypedDict on Python 3.11, and most graphs declare their state that way)
        keys = graph.schemas.get(graph.input_schema) or graph.channels
        self.inputs = [key for key in REQUEST_KEYS if key in keys]

    def input_of(self, request: RunRequested) -> dict[str, Any]:
        """The request's fields the graph's state has, as JSON values."""
        values = msgspec.to_builtins(request)
        return {key: values[key] for key in self.inputs}

    async def run(
        self,
        request: RunRequested,
        done: Mapping[str, StepOutput | None],
        reporter: StepReporter,
        *,
        spent: Usage,
    ) -> JsonOutput:
        thread = request.run_id
        meter = UsageMeter(request, spent)
        config: RunnableConfig = {
            "configurable": {"thread_id": thread},
            "callbacks": [meter],
            "recursion_limit": RECURSION_LIMIT,
        }
        resumed = await self.saver.aget_tuple(config) is not None
        run = _Attempt(self, request, reporter, meter, StepNames(done), len(done))
        self.saver.listen(thread)
        try:
            if resumed:
                await run.restore(config, done)
            await run.stream(None if resumed else self.input_of(request), config)
        finally:
            self.saver.forget(thread)
        state = await self.graph.aget_state(config)
        return JsonOutput(value=jsonable(state.values))


class _Attempt:
    """One attempt's stream: task events become steps, custom payloads become progress."""

    def __init__(
        self,
        pipeline: GraphPipeline,
        request: RunRequested,
        reporter: StepReporter,
        meter: UsageMeter,
        names: StepNames,
        index: int,
    ) -> None:
        self.pipeline, self.request, self.reporter = pipeline, request, reporter
        self.meter, self.names, self.index = meter, names, index
        self.running: dict[str, tuple[str, float]] = {}
        """task id → (step name, monotonic start)."""
        self.latest: str | None = None
        self.acked: set[str] = set()
        """Tasks whose StepCompleted an earlier attempt appended."""
        self.saved: dict[str, Any] = {}
        """Tasks whose writes were saved before this attempt, with their updates."""

    async def restore(self, config: RunnableConfig, done: Mapping[str, StepOutput | None]) -> None:
        """Before a resumed stream: LangGraph replays the task events of nodes whose writes it
        saved (it does not run them again). Those this run acknowledged are skipped; the others
        (saved, then a crash before their StepCompleted) complete now under their own name."""
        self.acked = {o.task for o in done.values() if isinstance(o, JsonOutput) and o.task}
        snapshot = await self.pipeline.graph.aget_state(config)
        self.saved = {t.id: t.result for t in snapshot.tasks if t.result is not None and t.error is None}

    async def stream(self, inputs: dict[str, Any] | None, config: RunnableConfig) -> None:
        stream = self.pipeline.graph.astream(
            inputs, config, stream_mode=["tasks", "custom"], durability="sync"
        )
        async for mode, chunk in stream:
            if mode == "tasks" and isinstance(chunk, dict):
                await self._task(chunk)
            elif mode == "custom":
                await self._custom(chunk)

    async def _task(self, event: dict[str, Any]) -> None:
        task_id, node = str(event["id"]), str(event["name"])
        if node.startswith("__") or task_id in self.acked:
            return
        if "result" not in event and "error" not in event:
            step = self.names.next(node)
            self.running[task_id], self.latest = (step, time.monotonic()), task_id
            await self.reporter.started(step, self.index)
            self.index += 1
            if task_id in self.saved:  # LangGraph replays its start only: it completes now
                await self._report(task_id, self.saved.pop(task_id), Usage())
            return
        if event.get("error") is not None or task_id not in self.running:
            return  # the exception itself ends the stream
        await self._completed(task_id, event.get("result") or [])

    async def _completed(self, task_id: str, writes: list[tuple[str, Any]]) -> None:
        if writes:  # durable before acknowledged: a resume must not run this node again
            try:
                written = self.pipeline.saver.written(self.request.run_id, task_id)
                await asyncio.wait_for(written.wait(), DURABLE_WAIT_S)
            except TimeoutError as exc:
                step = self.running[task_id][0]
                raise PipelineError("checkpoint", f"{step}: writes not saved", transient=True) from exc
        await self._report(task_id, dict(writes), self.meter.take(task_id))

    async def _report(self, task_id: str, update: Any, usage: Usage) -> None:
        step, began = self.running.pop(task_id)
        output = JsonOutput(value=jsonable(update), task=task_id)
        await self.reporter.completed(step, output, round(time.monotonic() - began, 3), usage)

    async def _custom(self, payload: Any) -> None:
        if self.latest is None or self.latest not in self.running:
            return
        step = self.running[self.latest][0]
        fraction, message = progress_of(payload)
        await self.reporter.progress(step, fraction, message)


def progress_of(payload: Any) -> tuple[float, str]:
    """A ``get_stream_writer()`` payload as (fraction, message): a number, text or a mapping
    with ``progress`` and/or ``message``; anything else is shown as JSON."""
    if isinstance(payload, int | float) and not isinstance(payload, bool):
        return min(max(float(payload), 0.0), 1.0), ""
    if isinstance(payload, str):
        return 0.0, payload
    if isinstance(payload, Mapping) and ("progress" in payload or "message" in payload):
        value = payload.get("progress", 0.0)
        fraction = float(value) if isinstance(value, int | float) else 0.0
        return min(max(fraction, 0.0), 1.0), str(payload.get("message", ""))
    return 0.0, msgspec.json.encode(jsonable(payload)).decode()


def jsonable(value: Any) -> Any:
    """``value`` as JSON builtins: LangChain messages and pydantic models by their fields,
    anything else unknown by its text."""
    return msgspec.json.decode(msgspec.json.encode(value, enc_hook=_hook))


def _hook(obj: Any) -> Any:
    dump = getattr(obj, "model_dump", None)
    if callable(dump):
        return dump(mode="json", exclude_none=True)
    return str(obj)
