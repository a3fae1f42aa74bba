"""Token usage of LangChain chat models inside a graph, per node execution, held to the budget."""

from __future__ import annotations

import threading
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.outputs import LLMResult

from shared.pipeline_sdk import PipelineError, RunRequested, Usage, over_budget


class UsageMeter(BaseCallbackHandler):
    """Counts every chat-model call to the graph task it ran in (LangGraph's metadata names
    it), and refuses a call once the run's budget is spent (fail closed)."""

    raise_error = True
    """A refused call must fail its node, not be logged and skipped."""

    def __init__(self, request: RunRequested, spent: Usage) -> None:
        self.request, self.spent = request, spent
        self._lock = threading.Lock()  # sync nodes report from worker threads
        self._task_of: dict[UUID, str] = {}
        self._usage: dict[str, Usage] = {}

    def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[Any]],
        *,
        run_id: UUID,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self.on_llm_start(serialized, [], run_id=run_id, metadata=metadata)

    def on_llm_start(
        self,
        serialized: dict[str, Any],
        prompts: list[str],
        *,
        run_id: UUID,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        with self._lock:
            if reason := over_budget(self.request, self.spent):
                raise PipelineError("budget_exceeded", reason)
            namespace = str((metadata or {}).get("langgraph_checkpoint_ns", ""))
            self._task_of[run_id] = namespace.split("|")[0].rpartition(":")[2]

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        prompt, completion = tokens_of(response)
        used = Usage(calls=1, prompt_tokens=prompt, completion_tokens=completion)
        with self._lock:
            task = self._task_of.pop(run_id, "")
            self._usage[task] = self._usage.get(task, Usage()) + used
            self.spent = self.spent + used

    def take(self, task_id: str) -> Usage:
        """What the task's model calls used; forgotten once taken."""
        with self._lock:
            return self._usage.pop(task_id, Usage())


def tokens_of(response: LLMResult) -> tuple[int, int]:
    """(prompt, completion) tokens: the OpenAI-style ``token_usage`` or the message's usage_metadata."""
    usage = (response.llm_output or {}).get("token_usage") or {}
    if usage:
        return int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
    prompt = completion = 0
    for generations in response.generations:
        for generation in generations:
            meta = getattr(getattr(generation, "message", None), "usage_metadata", None) or {}
            prompt += int(meta.get("input_tokens") or 0)
            completion += int(meta.get("output_tokens") or 0)
    return prompt, completion
