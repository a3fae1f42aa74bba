"""Test helpers: a runner that appends through the real write path, and an SSE reader."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from shared.catalog import plan_steps
from shared.events import (
    RunCompleted,
    RunFailed,
    RunRequested,
    RunStarted,
    StepCompleted,
    StepProgress,
    StepStarted,
)
from shared.ids import new_run_id
from shared.results import RunResult
from shared.store import EventStore

RUNS = "/api/trading/runs"
ANALYSTS = ("market", "risk")
BODY = {"symbol": "AAPL", "analysts": ["market", "risk"], "join": False}
"""Most tests submit it repeatedly and mean a new run each time (tests/gateway/test_join.py joins)."""


def result(symbol: str = "AAPL") -> RunResult:
    return RunResult(
        symbol=symbol,
        decision="BUY",
        rating="Buy",
        confidence=0.7,
        horizon="3 months",
        rationale="test",
        key_risks=["volatility"],
        reports=[],
    )


class Runner:
    """Appends a runner's events with ``EventStore.append`` (fenced), as the runner does."""

    def __init__(self, store: EventStore) -> None:
        self.store = store

    async def start(self, run_id: str, analysts: tuple[str, ...] = ANALYSTS, fence: str = "f1") -> str:
        steps = plan_steps(analysts)
        return await self.store.append(
            RunStarted(run_id=run_id, runner_id="test-runner", attempt=1, steps=steps), fence=fence
        )

    async def step(self, run_id: str, step: str, index: int, fence: str = "f1") -> list[str]:
        return [
            await self.store.append(StepStarted(run_id=run_id, step=step, index=index), fence=fence),
            await self.store.append(StepProgress(run_id=run_id, step=step, progress=0.5), fence=fence),
            await self.store.append(StepCompleted(run_id=run_id, step=step, duration_s=0.1), fence=fence),
        ]

    async def complete(self, run_id: str, fence: str = "f1") -> str:
        event = RunCompleted(run_id=run_id, result=result(), duration_s=1.0)
        return await self.store.append(event, fence=fence)

    async def fail(self, run_id: str, fence: str = "f1") -> str:
        return await self.store.append(RunFailed(run_id=run_id, code="boom", message="it broke"), fence=fence)

    async def run_all_steps(self, run_id: str, analysts: tuple[str, ...] = ANALYSTS) -> None:
        for index, step in enumerate(plan_steps(analysts)):
            await self.step(run_id, step, index)

    async def run_all(self, run_id: str, analysts: tuple[str, ...] = ANALYSTS) -> None:
        await self.start(run_id, analysts)
        await self.run_all_steps(run_id, analysts)
        await self.complete(run_id)


def request_event(user_id: str, symbol: str = "AAPL") -> RunRequested:
    return RunRequested(
        run_id=new_run_id(), user_id=user_id, symbol=symbol, model_id="offline", analysts=ANALYSTS
    )


@dataclass
class SseMessage:
    id: str | None
    event: str
    data: Any


@dataclass
class SseLog:
    messages: list[SseMessage] = field(default_factory=list)
    retry: int | None = None
    comments: int = 0
    lines: AsyncIterator[str] | None = None

    @property
    def ids(self) -> list[str]:
        return [m.id for m in self.messages if m.id]

    @property
    def events(self) -> list[str]:
        return [m.event for m in self.messages]


async def read_sse(
    response: httpx.Response, log: SseLog, stop_after: int | None = None, stop_on_end: bool = True
) -> SseLog:
    """Parse an event stream into ``log`` until ``end`` (or ``stop_after`` messages with an id)."""
    fields: dict[str, str] = {}
    log.lines = log.lines or response.aiter_lines()  # a response's lines can be iterated once
    async for line in log.lines:
        if line.startswith(":"):
            log.comments += 1
        elif line == "":
            if "retry" in fields:
                log.retry = int(fields.pop("retry"))
            if "event" in fields or "data" in fields:
                data = json.loads(fields["data"])
                message = SseMessage(fields.get("id"), fields.get("event", "message"), data)
                log.messages.append(message)
                if stop_on_end and message.event == "end":
                    return log
                if stop_after is not None and len(log.ids) >= stop_after:
                    return log
            fields = {}
        else:
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
    return log


def stream_ids(raw: Any) -> list[str]:
    return [i.decode() if isinstance(i, bytes) else str(i) for i, _ in raw]
