"""A base for the tests' stand-in pipelines: the pipeline protocol's ``run`` signature, stated once.

A test pipeline subclasses ``PipelineDouble`` and writes only ``body``, which gets the call's
arguments as one ``Attempt``. The runner sees an ordinary ``Runnable`` (shared/pipeline_sdk.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from shared.pipeline_sdk import Result, RunRequested, StepOutput, StepReporter, Usage


@dataclass(frozen=True)
class Attempt:
    """One call of a pipeline's ``run``, as the runner makes it (``Runnable`` in shared/pipeline_sdk.py)."""

    request: RunRequested
    done: Mapping[str, StepOutput | None]
    """Outputs of the steps earlier attempts completed."""
    reporter: StepReporter
    spent: Usage
    """What earlier attempts cost."""


class PipelineDouble:
    """A test pipeline: ``run`` states the protocol once, a subclass writes only ``body``."""

    async def run(
        self,
        request: RunRequested,
        done: Mapping[str, StepOutput | None],
        reporter: StepReporter,
        *,
        spent: Usage,
    ) -> Result:
        return await self.body(Attempt(request, done, reporter, spent))

    async def body(self, attempt: Attempt) -> Result:
        raise NotImplementedError
