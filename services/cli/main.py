"""The `tickertape` command: launch the system, run one service, or talk to a running gateway."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from services.cli import commands, forks, launcher, shares
from shared.config import ConfigError

SERVICES = ("gateway", "runner", "projector")


def exec_service(name: str, args: Sequence[str] = ()) -> int:
    """Replace this process with ``python -m services.<name>`` (the CLI never imports a service)."""
    sys.stdout.flush()
    os.execv(sys.executable, [sys.executable, "-m", f"services.{name}", *args])
    return 0  # not reached


def _service_command(name: str) -> Callable[[argparse.Namespace], int]:
    return lambda ns: exec_service(name, ns.args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tickertape",
        description="Multi-agent stock analyses run in the background, over Redis Streams.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    up = sub.add_parser("up", help="start Redis, projector, runner and gateway; Ctrl-C stops all")
    up.set_defaults(func=lambda _ns: launcher.up())
    for name in SERVICES:
        cmd = sub.add_parser(name, help=f"run the {name} service in the foreground")
        cmd.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
        cmd.set_defaults(func=_service_command(name))
    rebuild = sub.add_parser("rebuild", help="drop the read models and replay the event log")
    rebuild.set_defaults(func=lambda _ns: exec_service("projector", ["rebuild"]))
    commands.register(sub)
    forks.register(sub)
    shares.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `tickertape` console script."""
    ns = build_parser().parse_args(argv)
    try:
        code: int = ns.func(ns)
    except ConfigError as exc:
        print(f"tickertape: configuration error: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
