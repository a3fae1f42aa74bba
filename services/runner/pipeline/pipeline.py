"""The trading-agents pipeline: data → analysts → debate → trader → final assessment."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypeVar

import httpx
import msgspec
from redis.asyncio import Redis

from services.runner.pipeline import decide, desk, memory, prompts, tools
from services.runner.pipeline.base import PipelineError, StepReporter
from services.runner.pipeline.data import MarketDataService
from services.runner.pipeline.desk import Point
from services.runner.pipeline.evidence import ANALYSES, Evidence
from services.runner.pipeline.evidence import of as evidence_of
from services.runner.pipeline.llm import ChatModel, OpenAIChat, RetryPolicy, TextSink
from services.runner.pipeline.metering import Budget, MeteredModel, capped
from services.runner.pipeline.offline import OfflineModel
from services.runner.pipeline.progress import Ticker, usage_between
from services.runner.pipeline.settings import PipelineSettings
from shared.catalog import (
    ANALYST_STEP_PREFIX,
    DATA_STEP,
    DEBATE_STEP,
    FINAL_STEP,
    RISK_STEP,
    TRADER_STEP,
    plan_steps,
    step_label,
)
from shared.events import RunRequested
from shared.models import ModelSpec, load_registry
from shared.results import (
    AnalystReport,
    Assessment,
    ChartData,
    Debate,
    DebateTurn,
    MarketData,
    RiskDebate,
    RiskTurn,
    RunResult,
    StepOutput,
    ToolUse,
    TradeProposal,
    Usage,
    data_note,
)

logger = logging.getLogger(__name__)

MAX_DEBATE_ROUNDS = 5
MAX_RISK_ROUNDS = 5
TICKS = 3
LIVE_CHARS = 160
"""How much of a streaming answer a progress message carries (its newest words)."""
"""Progress reports a step makes; the pacing delay is spread over them."""


@dataclass
class RunContext:
    """One run's request, model, and the outputs of the steps so far."""

    request: RunRequested
    model: MeteredModel
    provider: str
    outputs: dict[str, StepOutput | None] = field(default_factory=dict)

    @property
    def symbol(self) -> str:
        return self.request.symbol.strip().upper()

    def reports(self) -> list[AnalystReport]:
        return [o for o in self.outputs.values() if isinstance(o, AnalystReport)]

    def output(self, step: str, kind: type[StepOutput]) -> StepOutput | None:
        value = self.outputs.get(step)
        return value if isinstance(value, kind) else None


class Pipeline:
    """Runs a request's steps, reporting each; skips steps in ``done`` and reuses their outputs."""

    def __init__(
        self,
        settings: PipelineSettings,
        redis: Redis,
        http: httpx.AsyncClient,
        *,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.settings, self.http, self.environ, self.redis = settings, http, environ, redis
        self.registry: dict[str, ModelSpec] = load_registry(settings.models_path)
        self.data = MarketDataService(settings, redis)

    async def run(
        self,
        request: RunRequested,
        done: Mapping[str, StepOutput | None],
        reporter: StepReporter,
        *,
        spent: Usage | None = None,
    ) -> RunResult | None:
        """Execute the plan; ``spent`` is what earlier attempts already cost (counts to the budget)."""
        steps = plan_steps(request.analysts, request.options.pipeline)
        if not steps:
            return None
        run = self._context(request, spent or Usage())
        for index, step in enumerate(steps):
            if step in done:
                run.outputs[step] = done[step]
                continue
            await self._step(run, step, index, reporter)
        return await self._result(run)

    def _context(self, request: RunRequested, spent: Usage) -> RunContext:
        unknown = [a for a in request.analysts if a not in ANALYSES]
        if unknown or not request.analysts:
            raise PipelineError(
                "invalid_request", f"unknown or no analysts: {', '.join(unknown) or '(none)'}"
            )
        spec = self.registry.get(request.model_id)
        if spec is None:
            valid = ", ".join(sorted(self.registry))
            raise PipelineError("unknown_model", f"unknown model {request.model_id!r}; valid: {valid}")
        options = request.options
        budget = Budget(
            spec,
            max_tokens=capped(options.max_tokens, self.settings.max_run_tokens),
            max_cost_usd=capped(options.max_cost_usd, self.settings.max_run_cost_usd),
            spent=spent,
        )
        provider = options.data_provider or self.settings.data_provider
        return RunContext(
            request=request, model=MeteredModel(spec, self._client(spec), budget), provider=provider
        )

    def _client(self, spec: ModelSpec) -> ChatModel:
        if spec.provider == "offline":
            return OfflineModel()
        s = self.settings
        policy = RetryPolicy(retries=s.llm_retries, base_s=s.llm_backoff_s, max_s=s.llm_backoff_max_s)
        return OpenAIChat(spec, self.http, timeout_s=s.llm_timeout_s, policy=policy, environ=self.environ)

    async def _step(self, run: RunContext, step: str, index: int, reporter: StepReporter) -> None:
        await reporter.started(step, index)
        began, before = time.monotonic(), run.model.budget.spent
        ticker = Ticker(reporter, step, self.settings.step_delay_s)
        output = await self._execute(run, step, ticker)
        await ticker.finish()
        run.outputs[step] = output
        usage = usage_between(before, run.model.budget.spent)
        await reporter.completed(step, output, round(time.monotonic() - began, 3), usage)

    async def _execute(self, run: RunContext, step: str, ticker: Ticker) -> StepOutput:
        if step == DATA_STEP:
            return await self._collect(run, ticker)
        if step.startswith(ANALYST_STEP_PREFIX):
            return await self._analyse(run, step, ticker)
        if step == DEBATE_STEP:
            return await self._debate(run, ticker)
        if step == TRADER_STEP:
            return await self._trade(run, ticker)
        if step == RISK_STEP:
            return await self._risk(run, ticker)
        if step == FINAL_STEP:
            return await self._assess(run, ticker)
        raise PipelineError("invalid_request", f"unknown step {step!r}")

    async def _market(self, run: RunContext) -> MarketData:
        """The collected data; fetched again (from the cache) if a resumed run lacks it."""
        data = run.output(DATA_STEP, MarketData)
        if isinstance(data, MarketData):
            return data
        fetched = await self.data.get(run.provider, run.symbol, run.request.at.date())
        run.outputs[DATA_STEP] = fetched
        return fetched

    async def _collect(self, run: RunContext, ticker: Ticker) -> MarketData:
        await ticker.tick(0.1, f"fetching {run.symbol} from {run.provider}")
        data = await self.data.get(run.provider, run.symbol, run.request.at.date())
        run.outputs[DATA_STEP] = data
        bars = len(data.prices.dates)
        await ticker.tick(0.6, f"{bars} daily bars {data.prices.dates[0]} … {data.prices.dates[-1]}")
        await ticker.tick(
            0.9,
            f"{len(data.headlines)} headlines"
            + (f" ({data_note(data.provider, data.demo, data.listed)})" if data.demo else ""),
        )
        return data

    async def _analyse(self, run: RunContext, step: str, ticker: Ticker) -> AnalystReport:
        analyst = step.removeprefix(ANALYST_STEP_PREFIX)
        data = await self._market(run)
        await ticker.tick(0.1, "computing evidence")
        evidence = evidence_of(analyst, data)
        await ticker.tick(0.4, f"evidence score {evidence.score:+.2f} ({evidence.signal}); writing report")
        name = step_label(step)
        sink = ticker.writing(0.5, name)
        text, uses = await self._write_report(run, analyst, name, evidence, data, sink)
        await ticker.tick(0.9, f"report written ({len(uses)} tool calls)" if uses else "report written")
        return AnalystReport(
            analyst=analyst,
            title=f"{name}: {evidence.signal}",
            signal=evidence.signal,
            score=evidence.score,
            summary=_first_line(text),
            report=text,
            evidence=dict(evidence.numbers),
            tool_calls=uses,
            unsourced=tools.unsourced(text, uses) if uses else [],
        )

    async def _write_report(
        self,
        run: RunContext,
        analyst: str,
        name: str,
        evidence: Evidence,
        data: MarketData,
        sink: TextSink,
    ) -> tuple[str, list[ToolUse]]:
        """With a real model that takes tools the analyst gathers its own numbers; otherwise (and
        when the server rejects tools) the computed evidence is put in the prompt."""
        spec, limit = run.model.spec, self.settings.max_tool_calls
        if spec.provider == "openai" and spec.tools and limit > 0:
            rules = prompts.analyst(name, run.symbol, evidence, data.demo).messages[0]
            ask = tools.request(name, run.symbol, analyst, limit, rules)
            written = await tools.analyse(run.model, ask, data, limit)
            if written is not None:
                return written
        return await run.model.text(prompts.analyst(name, run.symbol, evidence, data.demo), sink), []

    def _sides(self, run: RunContext, data: MarketData) -> tuple[list[Point], list[Point]]:
        analysts = [r.analyst for r in run.reports()]
        return desk.side_points(data, analysts, True), desk.side_points(data, analysts, False)

    async def _debate(self, run: RunContext, ticker: Ticker) -> Debate:
        data, reports = await self._market(run), run.reports()
        sides = self._sides(run, data)
        rounds = max(0, min(run.request.options.debate_rounds, MAX_DEBATE_ROUNDS))
        turns: list[DebateTurn] = []
        for round_ in range(1, rounds + 1):
            for side in ("bull", "bear"):
                request = prompts.debate_turn(side, round_, run.symbol, sides, turns, data.demo)
                sink = ticker.writing(0.05 + 0.8 * (round_ - 1) / rounds, f"{side} (round {round_})")
                argument = await run.model.text(request, sink)
                turns.append(DebateTurn(side=side, round=round_, argument=argument))
            await ticker.tick(0.8 * round_ / max(rounds, 1), f"round {round_} of {rounds}")
        score, lean = decide.composite(reports), decide.lean(reports)
        summary = await run.model.text(prompts.manager(run.symbol, turns, score, lean, sides, data.demo))
        await ticker.tick(0.95, f"research manager leans {lean}")
        return Debate(turns=turns, summary=summary, lean=lean)

    async def _trade(self, run: RunContext, ticker: Ticker) -> TradeProposal:
        data = await self._market(run)
        reference = decide.trade(data, run.reports())
        await ticker.tick(0.2, f"reference: {reference.action} at {reference.entry:.2f}")
        debate = run.output(DEBATE_STEP, Debate)
        request = prompts.trader(
            run.symbol, reference, debate if isinstance(debate, Debate) else None, data.demo
        )
        proposal = await run.model.structured(request, TradeProposal, prompts.check_trade)
        await ticker.tick(0.9, f"{proposal.action} {proposal.position_pct:.1f}% stop {proposal.stop:.2f}")
        return proposal

    async def _risk(self, run: RunContext, ticker: Ticker) -> RiskDebate:
        data = await self._market(run)
        trade = run.output(TRADER_STEP, TradeProposal)
        if not isinstance(trade, TradeProposal):
            trade = decide.trade(data, run.reports())
        debate = run.output(DEBATE_STEP, Debate)
        numbers, sizes = desk.risk_numbers(data), desk.sizes(trade)
        await ticker.tick(0.05, f"debating the {trade.action} at {trade.position_pct:.1f}% of the portfolio")
        context = prompts.RiskContext(
            symbol=run.symbol,
            trade=trade,
            risk=numbers,
            sides=self._sides(run, data),
            sizes={str(k): v for k, v in sizes.items()},
            summary=debate.summary if isinstance(debate, Debate) else "(none)",
            demo=data.demo,
        )
        rounds = max(1, min(run.request.options.risk_rounds, MAX_RISK_ROUNDS))
        turns: list[RiskTurn] = []
        for round_ in range(1, rounds + 1):
            for stance in desk.STANCES:
                sink = ticker.writing(0.05 + 0.9 * (round_ - 1) / rounds, f"{stance} (round {round_})")
                text = await run.model.text(prompts.risk_turn(context, stance, round_, turns), sink)
                turns.append(RiskTurn(stance=stance, round=round_, argument=text, position_pct=sizes[stance]))
            await ticker.tick(0.9 * round_ / rounds, f"risk round {round_} of {rounds}")
        return desk.risk_verdict(trade, numbers, sizes, turns, rounds)

    async def _assess(self, run: RunContext, ticker: Ticker) -> Assessment:
        data, reports = await self._market(run), run.reports()
        view = prompts.DeskView(
            reports=reports,
            debate=_as(run.output(DEBATE_STEP, Debate), Debate),
            trade=_as(run.output(TRADER_STEP, TradeProposal), TradeProposal),
            risk=_as(run.output(RISK_STEP, RiskDebate), RiskDebate),
            past=await memory.recall(self.redis, self.settings.keys, data, run.request),
        )
        reference = desk.assessment(data, reports, view.debate, view.trade, view.risk, view.past)
        await ticker.tick(0.2, f"reference: {reference.rating} ({reference.decision})")
        request = prompts.final(run.symbol, reference, view, data.demo)
        result = await run.model.structured(request, Assessment, prompts.check_assessment)
        result = msgspec.structs.replace(_filled(result, reference), memory=reference.memory)
        result = desk.explained(result, view.debate)
        await ticker.tick(0.9, f"{result.decision} ({result.rating}, confidence {result.confidence:.2f})")
        return result

    async def _result(self, run: RunContext) -> RunResult:
        data = await self._market(run)
        final = run.output(FINAL_STEP, Assessment)
        if not isinstance(final, Assessment):
            raise PipelineError("missing_output", "the final assessment step left no output")
        debate, trade = run.output(DEBATE_STEP, Debate), run.output(TRADER_STEP, TradeProposal)
        await memory.remember(self.redis, self.settings.keys, data, run.request, final)
        return RunResult(
            memory=final.memory,
            risk_debate=_as(run.output(RISK_STEP, RiskDebate), RiskDebate),
            price_target=final.price_target,
            horizon_days=final.horizon_days,
            position_pct=final.position_pct,
            symbol=run.symbol,
            decision=final.decision,
            rating=final.rating,
            confidence=final.confidence,
            horizon=final.horizon,
            rationale=final.rationale,
            key_risks=final.key_risks,
            reports=run.reports(),
            debate=debate if isinstance(debate, Debate) else None,
            trade=trade if isinstance(trade, TradeProposal) else None,
            provider=data.provider,
            demo=data.demo,
            last_close=data.prices.close[-1],
            chart=ChartData(dates=data.prices.dates, close=data.prices.close),
            data_note=data_note(data.provider, data.demo, data.listed),
        )


T = TypeVar("T")


def _as(value: object, kind: type[T]) -> T | None:
    return value if isinstance(value, kind) else None


def _filled(result: Assessment, reference: Assessment) -> Assessment:
    """A model's call keeps its own words; what it left out comes from the reference."""
    return msgspec.structs.replace(
        result,
        price_target=result.price_target if result.price_target is not None else reference.price_target,
        horizon_days=result.horizon_days or reference.horizon_days,
        position_pct=result.position_pct if result.position_pct is not None else reference.position_pct,
    )


def _first_line(text: str, limit: int = 280) -> str:
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return line if len(line) <= limit else line[: limit - 1] + "…"
