"""The analysis a run does, separate from the queue and lease code that executes it."""

from __future__ import annotations

from services.runner.pipeline.base import PipelineError, Runnable, StepReporter
from services.runner.pipeline.pipeline import Pipeline
from services.runner.pipeline.settings import PipelineSettings

__all__ = ["Pipeline", "PipelineError", "PipelineSettings", "Runnable", "StepReporter"]
