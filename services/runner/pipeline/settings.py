"""The pipeline's settings, read once from the environment."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from shared.catalog import DATA_PROVIDERS
from shared.config import ConfigError, Env
from shared.keys import Keys


@dataclass(frozen=True, slots=True)
class PipelineSettings:
    """How the analysis runs: pacing, data, models, retries and the operator's budget caps."""

    keys: Keys = field(default_factory=Keys)
    step_delay_s: float = 0.0
    data_provider: str = "synthetic"
    csv_dir: Path | None = None
    benchmark_symbol: str = "SPY"
    lookback_days: int = 400
    models_path: Path | None = None
    max_run_tokens: int = 500_000
    max_run_cost_usd: float = 5.0
    llm_timeout_s: float = 60.0
    llm_retries: int = 4
    llm_backoff_s: float = 0.5
    llm_backoff_max_s: float = 20.0
    market_cache_ttl_s: int = 36 * 3600
    data_rate_per_s: float = 2.0
    max_tool_calls: int = 4
    """Tool calls an analyst may make with a real model before it must write its report."""

    @classmethod
    def from_env(cls, env: Env | None = None) -> PipelineSettings:
        env = env or Env()
        csv_dir, models = env.optional("CSV_DIR"), env.optional("MODELS")
        settings = cls(
            keys=Keys(env.text("PREFIX", "tt:")),
            step_delay_s=env.number("STEP_DELAY_S", 0.0, minimum=0.0),
            data_provider=env.text("DATA_PROVIDER", "synthetic"),
            csv_dir=Path(csv_dir).resolve() if csv_dir else None,
            benchmark_symbol=env.text("BENCHMARK_SYMBOL", "SPY"),
            lookback_days=env.integer("LOOKBACK_DAYS", 400, minimum=30),
            models_path=Path(models) if models else None,
            max_run_tokens=env.integer("MAX_RUN_TOKENS", 500_000, minimum=1),
            max_run_cost_usd=env.number("MAX_RUN_COST_USD", 5.0, minimum=0.0),
            llm_timeout_s=env.number("LLM_TIMEOUT_S", 60.0, minimum=0.1),
            llm_retries=env.integer("LLM_RETRIES", 4, minimum=0),
            llm_backoff_s=env.number("LLM_BACKOFF_S", 0.5, minimum=0.0),
            llm_backoff_max_s=env.number("LLM_BACKOFF_MAX_S", 20.0, minimum=0.0),
            market_cache_ttl_s=env.integer("MARKET_CACHE_TTL_S", 36 * 3600, minimum=1),
            data_rate_per_s=env.number("DATA_RATE_PER_S", 2.0, minimum=0.01),
            max_tool_calls=env.integer("MAX_TOOL_CALLS", 4, minimum=0),
        )
        if settings.data_provider not in DATA_PROVIDERS:
            raise ConfigError(f"TT_DATA_PROVIDER must be one of {', '.join(DATA_PROVIDERS)}")
        return settings
