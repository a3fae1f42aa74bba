"""The projector's settings, read once from the environment."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from services.projector.endpoints import NONE, Endpoints, load
from shared.config import CommonSettings, ConfigError, Env
from shared.keys import DEFAULT_PROJECTOR, projector_group
from shared.webhooks import AllowList

HISTORY_ACTIONS = ("archive", "delete")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


@dataclass(frozen=True, slots=True)
class ProjectorSettings:
    """Everything the projector reads from ``TT_*`` / ``REDIS_URL``."""

    common: CommonSettings
    host: str
    port: int
    db_path: Path
    consumer: str
    batch_size: int
    batch_max: int
    batch_wait_ms: int
    snapshot_dir: Path
    snapshot_interval_s: float
    snapshot_keep: int
    retention_interval_s: float
    history_days: float
    history_action: str
    log_retention_s: float
    queue_retention_s: float
    reconcile_interval_s: float = 30.0
    reconcile_grace_s: float = 60.0
    name: str = DEFAULT_PROJECTOR
    """This replica's name: its consumer group is ``projector:<name>`` (``shared.keys``)."""
    publish_interval_s: float = 10.0
    """How often this replica tells the others (in ``tt:projectors``) which log entries it needs."""
    horizon_s: float = 86_400.0
    """A replica silent for longer no longer holds back trimming of the log."""
    webhook_interval_s: float = 0.5
    """How often due webhook deliveries are looked for (``TT_WEBHOOK_INTERVAL_S``; 0: no deliveries)."""
    webhook_backoff_s: float = 5.0
    """The first retry's backoff ceiling; it doubles per attempt, capped at an hour (full jitter)."""
    webhook_max_backoff_s: float = 3600.0
    """The cap of that doubling (``TT_WEBHOOK_MAX_BACKOFF_S``)."""
    webhook_endpoints: Endpoints = NONE
    """Operator endpoints for all runs of a user (``TT_WEBHOOK_ENDPOINTS``; projector/endpoints.py)."""

    @property
    def group(self) -> str:
        return projector_group(self.name)

    @property
    def lock_path(self) -> Path:
        return self.db_path.with_name(self.db_path.name + ".lock")

    @classmethod
    def from_env(cls, env: Env | None = None) -> ProjectorSettings:
        env = env or Env()
        common = CommonSettings.from_env(env)
        name = env.text("PROJECTOR_NAME", DEFAULT_PROJECTOR)
        if not _NAME.fullmatch(name):
            raise ConfigError(f"TT_PROJECTOR_NAME must match {_NAME.pattern}, got {name!r}")
        home = common.state_dir / "projector"
        if name != DEFAULT_PROJECTOR:  # two replicas on one host must not share a file
            home = home / name
        action = env.text("HISTORY_ACTION", "archive")
        batch_size = env.integer("PROJECTOR_BATCH_SIZE", 1000, minimum=1)
        if action not in HISTORY_ACTIONS:
            raise ConfigError(f"TT_HISTORY_ACTION must be one of {HISTORY_ACTIONS}, got {action!r}")
        return cls(
            common=common,
            host=env.text("PROJECTOR_HOST", "127.0.0.1"),
            port=env.integer("PROJECTOR_PORT", 8001, minimum=0),
            db_path=Path(env.text("PROJECTOR_DB", str(home / "tickertape.db"))).resolve(),
            consumer=env.text("PROJECTOR_CONSUMER", f"projector-{os.uname().nodename}"),
            batch_size=batch_size,
            batch_max=env.integer("PROJECTOR_BATCH_MAX", 8 * batch_size, minimum=batch_size),
            batch_wait_ms=env.integer("PROJECTOR_BATCH_WAIT_MS", 1000, minimum=1),
            snapshot_dir=Path(env.text("SNAPSHOT_DIR", str(home / "snapshots"))).resolve(),
            snapshot_interval_s=env.number("SNAPSHOT_INTERVAL_S", 3600.0, minimum=0.0),
            snapshot_keep=env.integer("SNAPSHOT_KEEP", 3, minimum=1),
            retention_interval_s=env.number("RETENTION_INTERVAL_S", 600.0, minimum=0.0),
            history_days=env.number("HISTORY_DAYS", 30.0, minimum=0.0),
            history_action=action,
            log_retention_s=env.number("LOG_RETENTION_S", 7 * 86400.0, minimum=0.0),
            queue_retention_s=env.number("QUEUE_RETENTION_S", 3600.0, minimum=0.0),
            reconcile_interval_s=env.number("RECONCILE_INTERVAL_S", 30.0, minimum=0.0),
            reconcile_grace_s=env.number("RECONCILE_GRACE_S", 60.0, minimum=0.0),
            name=name,
            publish_interval_s=env.number("PROJECTOR_PUBLISH_INTERVAL_S", 10.0, minimum=0.1),
            horizon_s=env.number("PROJECTOR_HORIZON_S", 86_400.0, minimum=1.0),
            webhook_interval_s=env.number("WEBHOOK_INTERVAL_S", 0.5, minimum=0.0),
            webhook_backoff_s=env.number("WEBHOOK_BACKOFF_S", 5.0, minimum=0.01),
            webhook_max_backoff_s=env.number("WEBHOOK_MAX_BACKOFF_S", 3600.0, minimum=0.01),
            webhook_endpoints=load(
                env.optional("WEBHOOK_ENDPOINTS"), AllowList.parse(common.webhook_allowed_hosts)
            ),
        )
