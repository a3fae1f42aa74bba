"""The seam between durable execution (services/runner) and the analysis it executes.

The types are the public pipeline SDK's (shared/pipeline_sdk.py); re-exported here for the runner.
"""

from __future__ import annotations

from shared.pipeline_sdk import PipelineError, Result, Runnable, StepReporter

__all__ = ["PipelineError", "Result", "Runnable", "StepReporter"]
