"""Each step's usage, and the run's demo flag, on the wire: full state views, SSE deltas, merges."""

from __future__ import annotations

import json

from services.gateway.frames import Source, event_frame
from services.gateway.schemas import state_view
from shared.events import AnyEvent, RunRequested, RunStarted, StepCompleted, StepStarted
from shared.reducer import apply
from shared.results import MarketData, PriceSeries, Usage
from shared.run_state import initial
from shared.statedelta import merge

RUN = "r1"
DATA = MarketData(
    symbol="AAPL", provider="synthetic", demo=True,
    prices=PriceSeries(dates=["2026-11-30"], open=[1.0], high=[1.0], low=[1.0], close=[1.0], volume=[1.0]),
)  # fmt: skip


def test_a_step_carries_its_usage_in_the_run_usage_shape_and_the_delta_carries_it() -> None:
    state = initial(RUN)
    events: list[tuple[str, AnyEvent]] = []
    for event in (
        RunRequested(run_id=RUN, user_id="u", symbol="AAPL", model_id="offline", analysts=("market",)),
        RunStarted(run_id=RUN, runner_id="w", attempt=1, steps=("data", "market")),
        StepStarted(run_id=RUN, step="data", index=0),
    ):
        entry_id = f"{state.event_count + 1}-0"
        state = apply(state, event, entry_id)
        events.append((entry_id, event))
    before = state_view(state)
    spent = Usage(calls=2, prompt_tokens=300, completion_tokens=45, cost_usd=0.0123)
    done = StepCompleted(run_id=RUN, step="data", duration_s=0.5, output=DATA, usage=spent)
    state = apply(state, done, "9-0")
    events.append(("9-0", done))

    frame, after = event_frame("9-0", done, before, state, Source(RUN, events, len(events)))
    sent = json.loads(frame.data.split(b"data: ", 1)[1])

    step = after["steps"][0]
    assert step["usage"] == after["usage"] == {
        "calls": 2, "promptTokens": 300, "completionTokens": 45, "costUsd": 0.0123,
    }  # fmt: skip
    assert after["steps"][1]["usage"]["calls"] == 0 and after["demo"] is True and after["outcome"] is None
    assert {"name": "data", "usage": step["usage"]}.items() <= sent["delta"]["steps"][0].items()
    assert sent["delta"]["demo"] is True
    assert merge(before, sent["delta"], "9-0") == after
