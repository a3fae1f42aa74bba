"""A recording StepReporter and request builders for the pipeline tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from shared.events import RunOptions, RunRequested
from shared.results import StepOutput, Usage

AS_OF = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)
ALL_ANALYSTS = ("market", "fundamentals", "news", "sentiment", "risk", "invest")


@dataclass
class Completed:
    step: str
    output: StepOutput | None
    duration_s: float
    usage: Usage


@dataclass
class RecordingReporter:
    """Keeps every call, in order, the way the runner would turn them into events."""

    starts: list[tuple[str, int]] = field(default_factory=list)
    ticks: list[tuple[str, float, str]] = field(default_factory=list)
    finished: list[Completed] = field(default_factory=list)

    async def started(self, step: str, index: int) -> None:
        self.starts.append((step, index))

    async def progress(self, step: str, fraction: float, message: str = "") -> None:
        self.ticks.append((step, fraction, message))

    async def completed(self, step: str, output: StepOutput | None, duration_s: float, usage: Usage) -> None:
        self.finished.append(Completed(step, output, duration_s, usage))

    @property
    def steps(self) -> list[str]:
        return [c.step for c in self.finished]

    @property
    def usage(self) -> Usage:
        total = Usage()
        for c in self.finished:
            total = total + c.usage
        return total

    def outputs(self) -> dict[str, StepOutput | None]:
        return {c.step: c.output for c in self.finished}


def request(
    symbol: str = "AAPL",
    analysts: tuple[str, ...] = ALL_ANALYSTS,
    model_id: str = "offline",
    **options: object,
) -> RunRequested:
    return RunRequested(
        run_id="run-test",
        at=AS_OF,
        user_id="local",
        symbol=symbol,
        model_id=model_id,
        analysts=analysts,
        options=RunOptions(**options),  # type: ignore[arg-type]
    )
