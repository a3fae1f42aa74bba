"""The runner's settings: read once from the environment at start, frozen afterwards."""

from __future__ import annotations

import os
import resource
import secrets
import socket
from dataclasses import dataclass

from shared.catalog import PipelineSpecError, parse_pipelines
from shared.config import CommonSettings, ConfigError, Env

DEFAULT_PIPELINE = "services.runner.factory:build_pipeline"
DEFAULT_CONCURRENCY = 200
"""Runs one process executes at a time. A run mostly waits on a model, so a slot costs little
memory (~110 KB), and an LLM-bound run of the built-in pipeline (18 calls, ~33 s of model time)
costs the process 40-80 ms of CPU: at 100 and at 300 in flight every run completed with no
takeover, 0.8 % and 2.0 % overhead, with the gateway, the model simulator and Redis on the same
two cores; 200 keeps a margin below that edge. At 1,000 every run completed too, but the cores
were full (docs/benchmarks.md, row 7; docs/capacity.md). For more in flight, add processes."""
RUNS_PER_REDIS_CONNECTION = 100
"""In-flight runs one pooled Redis connection serves. The runs' appends share pipelines (the
store's batcher), but their other commands (reads, acks, the pipelines' own caches) take a
connection each; shared by more runs, those queue, and fail once a wait passes the pool's 30 s."""
SPARE_FILES = 64
"""File descriptors the process needs beyond its sockets to Redis and to the models."""


def open_files_limit() -> int:
    """The process's soft RLIMIT_NOFILE (what a socket more than it fails with EMFILE)."""
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def default_runner_id() -> str:
    """host-pid-random: unique per process, readable in XINFO CONSUMERS."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


@dataclass(frozen=True, slots=True)
class RunnerSettings:
    """How one runner process consumes, leases, retries and stops."""

    common: CommonSettings
    runner_id: str
    concurrency: int
    lease_s: float
    lease_renew_s: float
    claim_interval_s: float
    max_attempts: int
    run_deadline_s: float
    step_timeout_s: float
    shutdown_grace_s: float
    retry_backoff_s: float
    read_block_s: float
    stats_interval_s: float
    outcome_sweep_s: float
    """How often the runner measures the outcomes of calls whose horizon has passed (0: never)."""
    redis_connections: int
    """Pooled Redis connections the runs share; beyond them a command waits for one."""
    http_connections: int
    """Connections to the models (the runner's httpx pool); beyond them a call waits for one."""
    port: int
    host: str
    pipeline: str
    """``module:callable`` building the pipeline from (redis, http); tests point it at their own."""
    pipelines: dict[str, str]
    """Pipelines registered with ``TT_PIPELINES=name=module:attribute,…`` (docs/pipeline.md)."""

    @classmethod
    def from_env(cls, env: Env | None = None) -> RunnerSettings:
        env = env or Env()
        lease = env.number("LEASE_S", 30.0, minimum=0.1)
        renew = env.number("LEASE_RENEW_S", lease / 3, minimum=0.01)
        if renew >= lease:
            raise ConfigError(f"TT_LEASE_RENEW_S ({renew}) must be shorter than TT_LEASE_S ({lease})")
        concurrency = env.integer("RUNNER_CONCURRENCY", DEFAULT_CONCURRENCY, minimum=1)
        settings = cls(
            common=CommonSettings.from_env(env),
            runner_id=env.text("RUNNER_ID", "") or default_runner_id(),
            concurrency=concurrency,
            lease_s=lease,
            lease_renew_s=renew,
            claim_interval_s=env.number("CLAIM_INTERVAL_S", min(5.0, lease / 2), minimum=0.01),
            max_attempts=env.integer("MAX_ATTEMPTS", 3, minimum=1),
            run_deadline_s=env.number("RUN_DEADLINE_S", 600.0, minimum=0.01),
            step_timeout_s=env.number("STEP_TIMEOUT_S", 180.0, minimum=0.01),
            shutdown_grace_s=env.number("SHUTDOWN_GRACE_S", 20.0, minimum=0.0),
            retry_backoff_s=env.number("RETRY_BACKOFF_S", 1.0, minimum=0.0),
            read_block_s=env.number("READ_BLOCK_S", 2.0, minimum=0.01),
            stats_interval_s=env.number("QUEUE_STATS_INTERVAL_S", 5.0, minimum=0.1),
            outcome_sweep_s=env.number("OUTCOME_SWEEP_S", 300.0, minimum=0.0),
            redis_connections=env.integer("RUNNER_REDIS_CONNECTIONS", 64, minimum=1),
            http_connections=env.integer("RUNNER_HTTP_CONNECTIONS", concurrency, minimum=1),
            port=env.integer("RUNNER_PORT", 8002, minimum=0),
            host=env.text("RUNNER_HOST", "127.0.0.1"),
            pipeline=env.text("RUNNER_PIPELINE", DEFAULT_PIPELINE),
            pipelines=registered_pipelines(env),
        )
        settings.check_sustainable(open_files_limit())
        return settings

    def check_sustainable(self, open_files: int) -> None:
        """Refuse, at start and by name, a concurrency the process cannot keep its runs alive at."""
        needed = -(-self.concurrency // RUNS_PER_REDIS_CONNECTION)
        if self.redis_connections < needed:
            raise ConfigError(
                f"TT_RUNNER_CONCURRENCY={self.concurrency} needs TT_RUNNER_REDIS_CONNECTIONS >= {needed} "
                f"(one per {RUNS_PER_REDIS_CONNECTION} runs in flight, or their appends queue for a "
                f"connection); got {self.redis_connections}. Raise it or lower the concurrency."
            )
        files = min(self.http_connections, self.concurrency) + self.redis_connections + SPARE_FILES
        if files > open_files:
            raise ConfigError(
                f"TT_RUNNER_CONCURRENCY={self.concurrency} may hold {files} sockets at once "
                f"(models {min(self.http_connections, self.concurrency)}, Redis {self.redis_connections}, "
                f"{SPARE_FILES} spare) but the open-files limit is {open_files}: raise it (ulimit -n) "
                "or lower TT_RUNNER_CONCURRENCY / TT_RUNNER_HTTP_CONNECTIONS."
            )

    @property
    def lease_ms(self) -> int:
        return max(1, int(self.lease_s * 1000))


def registered_pipelines(env: Env) -> dict[str, str]:
    """``TT_PIPELINES`` parsed; a malformed value fails at start with its name."""
    try:
        return parse_pipelines(env.text("PIPELINES", ""))
    except PipelineSpecError as exc:
        raise ConfigError(str(exc)) from exc
