"""The pipelines a runner can execute: the built-in one and those ``TT_PIPELINES`` registers.

A registered target is imported on first use, on a worker thread (a user's module may import a
lot), and kept. It is a native pipeline (an object with ``run``, see shared/pipeline_sdk.py), a
LangGraph ``StateGraph`` (compiled or not), or a zero-argument callable returning one of those.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from shared.catalog import TRADING
from shared.config import CommonSettings
from shared.pipeline_sdk import PipelineError, Result, Runnable, RunRequested, StepOutput, StepReporter, Usage

if TYPE_CHECKING:
    from redis.asyncio import Redis


class Pipelines:
    """A Runnable that runs each request with the pipeline it names."""

    def __init__(
        self, builtin: Runnable, targets: Mapping[str, str], redis: Redis, common: CommonSettings
    ) -> None:
        self.builtin, self.targets = builtin, dict(targets)
        self.redis, self.common = redis, common
        self._loaded: dict[str, Runnable] = {}
        self._lock = asyncio.Lock()

    async def run(
        self,
        request: RunRequested,
        done: Mapping[str, StepOutput | None],
        reporter: StepReporter,
        *,
        spent: Usage,
    ) -> Result:
        pipeline = self.builtin if request.pipeline == TRADING else await self.get(request.pipeline)
        return await pipeline.run(request, done, reporter, spent=spent)

    async def get(self, name: str) -> Runnable:
        """The named pipeline, imported and built on its first run."""
        target = self.targets.get(name)
        if target is None:
            known = ", ".join([TRADING, *self.targets])
            raise PipelineError("unknown_pipeline", f"no pipeline {name!r} here (known: {known})")
        async with self._lock:
            if name not in self._loaded:
                obj = await asyncio.to_thread(load_target, target)
                self._loaded[name] = self._build(name, obj)
        return self._loaded[name]

    def _build(self, name: str, obj: Any) -> Runnable:
        if callable(getattr(obj, "run", None)):
            return obj  # type: ignore[no-any-return]
        from services.runner.graph.adapter import GraphPipeline, as_graph
        from services.runner.graph.checkpoint import RedisSaver

        graph = as_graph(obj)
        if graph is None and callable(obj):
            return self._build(name, obj())
        if graph is None:
            raise PipelineError("bad_pipeline", f"{name}: {self.targets[name]} is no pipeline or StateGraph")
        saver = RedisSaver(self.redis, self.common.keys, self.common.run_ttl_s)
        return GraphPipeline(graph, saver)


def load_target(target: str) -> Any:
    """Import ``module:attribute``; a failure fails the run that needs it, naming the target."""
    module_name, _, attr = target.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise PipelineError("bad_pipeline", f"cannot load {target}: {exc}") from exc
