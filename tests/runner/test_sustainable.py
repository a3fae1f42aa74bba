"""The runner's default concurrency, and the configurations it refuses to start with."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from services.runner.settings import DEFAULT_CONCURRENCY, RUNS_PER_REDIS_CONNECTION, RunnerSettings
from shared.config import ConfigError, Env

ROOT = Path(__file__).resolve().parents[2]


def settings(**env: str) -> RunnerSettings:
    return RunnerSettings.from_env(Env({"TT_RUNNER_PORT": "0", **env}))


def test_the_default_takes_a_hundred_llm_bound_runs_with_a_model_connection_each() -> None:
    found = settings()
    assert found.concurrency == DEFAULT_CONCURRENCY >= 100
    assert found.http_connections == DEFAULT_CONCURRENCY
    assert settings(TT_RUNNER_CONCURRENCY="7").http_connections == 7
    assert settings(TT_RUNNER_HTTP_CONNECTIONS="20").http_connections == 20


def test_more_runs_than_the_redis_pool_can_serve_are_refused_naming_both_settings() -> None:
    too_many = str(64 * RUNS_PER_REDIS_CONNECTION + 1)
    with pytest.raises(
        ConfigError, match=r"TT_RUNNER_CONCURRENCY=\d+ needs TT_RUNNER_REDIS_CONNECTIONS >= 65"
    ):
        settings(TT_RUNNER_CONCURRENCY=too_many)
    assert settings(TT_RUNNER_CONCURRENCY=too_many, TT_RUNNER_REDIS_CONNECTIONS="65").concurrency == int(
        too_many
    )


def test_more_sockets_than_the_open_files_limit_are_refused() -> None:
    found = settings(TT_RUNNER_CONCURRENCY="1000")
    with pytest.raises(ConfigError, match=r"open-files limit is 1024: raise it \(ulimit -n\)"):
        found.check_sustainable(1024)  # 1000 model sockets + 64 Redis + 64 spare
    found.check_sustainable(1200)
    settings(TT_RUNNER_CONCURRENCY="1000", TT_RUNNER_HTTP_CONNECTIONS="800").check_sustainable(1024)


def test_the_process_refuses_to_start_with_the_reason_and_no_traceback() -> None:
    env = {"PATH": "/usr/bin:/bin", "TT_RUNNER_CONCURRENCY": "100000", "TT_RUNNER_PORT": "0"}
    done = subprocess.run(
        [sys.executable, "-m", "services.runner"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("runner: TT_RUNNER_CONCURRENCY=100000 needs TT_RUNNER_REDIS_CONNECTIONS")
    assert "Traceback" not in done.stderr
