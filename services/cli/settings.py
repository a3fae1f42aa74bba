"""The CLI's settings: where the API and Redis are, where cursors live, how `up` paces runs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from services.cli.preflight import stack_note
from shared.config import Env
from shared.keys import Keys

DEFAULT_API_URL = "http://127.0.0.1:8000"


@dataclass(frozen=True, slots=True)
class ClientSettings:
    """What the client commands (submit, watch, runs, show, cancel) need."""

    api_url: str
    api_token: str | None
    state_dir: Path
    redis_url: str | None
    keys: Keys

    @property
    def cursor_dir(self) -> Path:
        return self.state_dir / "cli"

    @classmethod
    def from_env(cls, env: Env | None = None) -> ClientSettings:
        """TT_API_URL and REDIS_URL when set, else what the `up` running on the state folder
        noted (it may have been moved to other ports), else the defaults."""
        env = env or Env()
        state_dir = Path(env.text("STATE_DIR", ".state")).resolve()
        note = stack_note(state_dir)
        noted_api = note.get("api_url") if isinstance(note.get("api_url"), str) else None
        noted_redis = note.get("redis_url") if isinstance(note.get("redis_url"), str) else None
        return cls(
            api_url=env.text("API_URL", noted_api or DEFAULT_API_URL).rstrip("/"),
            api_token=env.optional("API_TOKEN"),
            state_dir=state_dir,
            redis_url=env.environ.get("REDIS_URL") or noted_redis or None,
            keys=Keys(env.text("PREFIX", "tt:")),
        )


@dataclass(frozen=True, slots=True)
class LaunchSettings:
    """What `tickertape up` needs: ports of the three services, pacing, grace, restart policy."""

    state_dir: Path
    redis_url: str | None
    gateway_port: int
    projector_port: int
    runner_port: int
    step_delay_s: str
    log_format: str
    grace_s: float
    health_timeout_s: float
    restart_backoff_s: float
    """First delay before a dead child is started again; doubles per restart up to the max."""
    restart_backoff_max_s: float
    restart_reset_s: float
    """A child healthy this long starts over at the first delay."""
    crash_loop_restarts: int
    crash_loop_window_s: float
    """This many restarts of one child within the window is a crash loop: everything stops."""

    @classmethod
    def from_env(cls, env: Env | None = None) -> LaunchSettings:
        env = env or Env()
        return cls(
            state_dir=Path(env.text("STATE_DIR", ".state")).resolve(),
            redis_url=env.environ.get("REDIS_URL") or None,
            gateway_port=env.integer("GATEWAY_PORT", 8000, minimum=1),
            projector_port=env.integer("PROJECTOR_PORT", 8001, minimum=1),
            runner_port=env.integer("RUNNER_PORT", 8002, minimum=0),
            step_delay_s=str(env.number("STEP_DELAY_S", 3.5, minimum=0.0)),
            log_format=env.text("LOG_FORMAT", "text"),
            grace_s=env.number("STOP_GRACE_S", 25.0, minimum=0.0),
            health_timeout_s=env.number("HEALTH_TIMEOUT_S", 30.0, minimum=1.0),
            restart_backoff_s=env.number("RESTART_BACKOFF_S", 0.5, minimum=0.0),
            restart_backoff_max_s=env.number("RESTART_BACKOFF_MAX_S", 30.0, minimum=0.0),
            restart_reset_s=env.number("RESTART_RESET_S", 60.0, minimum=0.0),
            crash_loop_restarts=env.integer("CRASH_LOOP_RESTARTS", 5, minimum=1),
            crash_loop_window_s=env.number("CRASH_LOOP_WINDOW_S", 60.0, minimum=1.0),
        )
