"""Client commands: submit, watch, runs, show, cancel (over the gateway's HTTP API)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from services.cli.api import Api, ApiError, GatewayDown, pick
from services.cli.cursors import Cursors
from services.cli.display import Display, duration, render_models, render_result, render_runs
from services.cli.markdown import markdown
from services.cli.present import resolve, run_url, self_command, step_usage, usage_line
from services.cli.settings import ClientSettings
from services.cli.watch import Detached, RedisWatcher, SignalGuard, SseWatcher
from shared.config import DEFAULT_REDIS_URL, Env, RedisTarget, sentinel_from_env
from shared.redis_io import connect_sync

Json = dict[str, Any]
Handler = Callable[[argparse.Namespace, ClientSettings], int]
# The exit codes, the same for every command (docs/cli.md lists them):
EXIT_OK = 0
EXIT_RUN_NOT_COMPLETED = 1
"""A followed run ended failed, timed out or cancelled."""
EXIT_USAGE = 2
"""Bad arguments or configuration (argparse uses 2 as well)."""
EXIT_REFUSED = 3
"""The gateway refused: bad input, no such run, an ambiguous prefix, nothing left to cancel."""
EXIT_UNREACHABLE = 4
"""Nothing answers at the API URL."""
EXIT_DETACHED = 130
DEFAULT_ANALYSTS = "market,fundamentals,risk"
"""The page's preset too (services/gateway/static/app.js): one default set everywhere."""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the client commands to the parser."""
    submit = sub.add_parser("submit", help="start a run (and follow it with --follow)")
    submit.add_argument("symbol", help="ticker symbol, e.g. AAPL")
    submit.add_argument(
        "--analysts", default=DEFAULT_ANALYSTS, help=f"comma-separated analyst ids ({DEFAULT_ANALYSTS})"
    )
    submit.add_argument(
        "--budget", type=float, default=None, help="stop the run past this many USD of LLM calls"
    )
    submit.add_argument("--model", default=None, help="model id (default: the gateway's, `offline`)")
    submit.add_argument("--debate-rounds", type=int, default=None)
    submit.add_argument("--risk-rounds", type=int, default=None, help="risk debate rounds, 1-5")
    submit.add_argument("--follow", "-f", action="store_true", help="show live progress until it ends")
    submit.set_defaults(func=_client(cmd_submit))
    watch = sub.add_parser("watch", help="follow a run live, resuming where the last watch stopped")
    watch.add_argument("run_id")
    watch.add_argument("--redis", action="store_true", help="read the run stream from REDIS_URL directly")
    watch.set_defaults(func=_client(cmd_watch))
    runs = sub.add_parser("runs", help="list your runs, newest first")
    runs.add_argument("--symbol", default=None)
    runs.add_argument("--status", default=None, help="a status, or `active`")
    runs.add_argument("--limit", type=int, default=20)
    runs.add_argument(
        "--iso", action="store_true", help="exact ISO times (for scripts) instead of '2 min ago'"
    )
    runs.add_argument(
        "--archived", action="store_true", help="the older runs moved out of the history to the archive"
    )
    runs.set_defaults(func=_client(cmd_runs))
    show = sub.add_parser("show", help="one run's status and result (export with --format md|json)")
    show.add_argument("run_id", help="a run id, or a unique start (or the page's 6-character end) of one")
    show.add_argument("--format", choices=("text", "md", "json"), default="text")
    show.add_argument(
        "--json", action="store_const", const="json", dest="format", help="same as --format json"
    )
    show.set_defaults(func=_client(cmd_show))
    cancel = sub.add_parser("cancel", help="cancel a queued or running run")
    cancel.add_argument("run_id")
    cancel.set_defaults(func=_client(cmd_cancel))
    models = sub.add_parser("models", help="the models a run may name, and which can run here")
    models.set_defaults(func=_client(cmd_models))


def _client(handler: Handler) -> Callable[[argparse.Namespace], int]:
    def run(ns: argparse.Namespace) -> int:
        try:
            return handler(ns, ClientSettings.from_env())
        except GatewayDown as exc:
            print(f"tickertape: {exc}", file=sys.stderr)
            return EXIT_UNREACHABLE
        except ApiError as exc:
            field = f" (field: {exc.field})" if exc.field else ""
            print(f"tickertape: {exc}{field}", file=sys.stderr)
            return EXIT_REFUSED

    return run


def cmd_submit(ns: argparse.Namespace, settings: ClientSettings) -> int:
    body: Json = {"symbol": ns.symbol, "analysts": [a.strip() for a in ns.analysts.split(",") if a.strip()]}
    if ns.model:
        body["modelId"] = ns.model
    if ns.debate_rounds is not None:
        body["debateRounds"] = ns.debate_rounds
    if ns.risk_rounds is not None:
        body["riskRounds"] = ns.risk_rounds
    if ns.budget is not None:
        body["maxCostUsd"] = ns.budget
    with Api(settings) as api:
        accepted = api.submit(body)
        run_id, status = str(pick(accepted, "run_id")), pick(accepted, "status")
        if pick(accepted, "joined"):
            print(f"{ns.symbol}: already running — showing that run: run {run_id} ({status})")
        else:
            print(f"submitted {ns.symbol}: run {run_id} ({status})")
        print(f"open: {run_url(settings.api_url, run_id)}")
        if not ns.follow:
            print(f"follow it with: {self_command()} watch {run_id}")
            return EXIT_OK
        return _follow_sse(api, settings, run_id)


def cmd_models(ns: argparse.Namespace, settings: ClientSettings) -> int:
    with Api(settings) as api:
        print(render_models(api.models().get("models", [])))
    return 0


def cmd_watch(ns: argparse.Namespace, settings: ClientSettings) -> int:
    with Api(settings) as api:
        run_id = resolve(api, ns.run_id)
        if not ns.redis:
            return _follow_sse(api, settings, run_id)
    target = RedisTarget(settings.redis_url or DEFAULT_REDIS_URL, sentinel_from_env(Env()))
    if not settings.redis_url and target.sentinel is None:
        raise ApiError(
            "--redis needs the Redis the services use: run `tickertape up` on this state folder "
            "(it notes its Redis URL there), or set REDIS_URL or TT_REDIS_SENTINELS"
        )
    redis = connect_sync(target, blocking=True, client_name="tt-cli:watch")
    try:
        guard, display = SignalGuard(), Display()
        watcher = RedisWatcher(redis, settings.keys, Cursors(settings.cursor_dir), display, guard)
        return _watching(guard, display, run_id, lambda: watcher.follow(run_id))
    finally:
        redis.close()


def _follow_sse(api: Api, settings: ClientSettings, run_id: str) -> int:
    guard, display = SignalGuard(), Display()
    watcher = SseWatcher(api, Cursors(settings.cursor_dir), display, guard)
    return _watching(guard, display, run_id, lambda: watcher.follow(run_id))


def _watching(guard: SignalGuard, display: Display, run_id: str, follow: Callable[[], Json]) -> int:
    try:
        with guard.installed():
            state = follow()
    except Detached:
        display.note(f"Detached: the run goes on. Re-attach with:  {self_command()} watch {run_id}")
        return EXIT_DETACHED
    display.note(render_result(state))
    display.note(f"  {usage_line(state)}")
    return EXIT_OK if pick(state, "status") == "completed" else EXIT_RUN_NOT_COMPLETED


def cmd_runs(ns: argparse.Namespace, settings: ClientSettings) -> int:
    with Api(settings) as api:
        page = api.runs(ns.symbol, ns.status, ns.limit, archived=ns.archived)
    runs = page.get("runs", page.get("items", []))
    print(render_runs(runs, iso=ns.iso) if runs else "no archived runs" if ns.archived else "no runs")
    return EXIT_OK


def cmd_show(ns: argparse.Namespace, settings: ClientSettings) -> int:
    with Api(settings) as api:
        run_id = resolve(api, ns.run_id)
        state = api.run(run_id)
    if ns.format == "json":
        print(json.dumps(state, indent=2))
        return EXIT_OK
    if ns.format == "md":
        print(markdown(state, run_url(settings.api_url, run_id)), end="")
        return EXIT_OK
    print(render_result(state))
    print(f"  {usage_line(state)}")
    print(f"  open: {run_url(settings.api_url, run_id)}")
    steps = pick(state, "steps", []) or []
    for step in steps:
        took, spent = pick(step, "duration_s"), step_usage(step)
        label = step.get("label", step.get("name"))
        line = f"  {step.get('status', ''):<10} {label}" + (f" ({duration(took)})" if took else "")
        print(line + (f"  {spent}" if spent else ""))
    return EXIT_OK


def cmd_cancel(ns: argparse.Namespace, settings: ClientSettings) -> int:
    """0 when the run is (now, or already) cancelled; 3 when it had already ended another way."""
    with Api(settings) as api:
        run_id = resolve(api, ns.run_id)
        status = str(pick(api.run(run_id), "status", ""))
        if status == "cancelled":
            print(f"run {run_id} is already cancelled")
            return EXIT_OK
        try:
            answer = api.cancel(run_id)
        except ApiError as exc:
            if exc.status == 409:
                ended = pick(api.run(run_id), "status", "ended")
                print(f"run {run_id} has already finished ({ended}); nothing to cancel")
                return EXIT_REFUSED
            raise
    print(f"cancel requested for run {run_id} ({pick(answer, 'status', 'accepted')})")
    return EXIT_OK
