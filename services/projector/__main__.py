"""``python -m services.projector [serve|rebuild [--from-log]]``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

import msgspec

from services.projector.locking import DatabaseBusy
from services.projector.rebuild import RebuildError, rebuild
from services.projector.service import ProjectorService, tune_gc
from services.projector.settings import ProjectorSettings
from shared import lifecycle
from shared.config import ConfigError
from shared.telemetry import setup_logging, setup_tracing

logger = logging.getLogger("services.projector")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = ProjectorSettings.from_env()
    except ConfigError as exc:
        sys.stderr.write(f"projector: {exc}\n")
        return 2
    setup_logging("projector", settings.common.log_format, settings.common.log_level)
    tune_gc()
    if args.command == "rebuild":
        return _rebuild(settings, from_log=args.from_log)
    setup_tracing("projector")
    try:
        lifecycle.main(lambda: ProjectorService(settings, http=True))
    except DatabaseBusy as exc:
        logger.error("projector refused to start: %s", exc)
        return 1
    return 0


def _rebuild(settings: ProjectorSettings, *, from_log: bool) -> int:
    try:
        report = asyncio.run(rebuild(settings, from_log=from_log))
    except (DatabaseBusy, RebuildError) as exc:
        logger.error("rebuild refused: %s", exc)
        return 1
    sys.stdout.write(msgspec.json.encode(report).decode() + "\n")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m services.projector")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("serve", help="consume the log and serve the internal API (default)")
    rebuild_cmd = sub.add_parser("rebuild", help="rebuild the read models and swap them in")
    rebuild_cmd.add_argument("--from-log", action="store_true", help="ignore snapshots; replay the whole log")
    parser.set_defaults(command="serve", from_log=False)
    return parser


if __name__ == "__main__":
    sys.exit(main())
