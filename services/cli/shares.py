"""`tickertape share` and `tickertape unshare`: read-only links to one run."""

from __future__ import annotations

import argparse
import re

from services.cli.api import Api, ApiError
from services.cli.commands import EXIT_OK, Json
from services.cli.commands import _client as client
from services.cli.present import resolve, self_command
from services.cli.settings import ClientSettings

_DURATION = re.compile(r"\s*(\d+)\s*([smhd]?)\s*")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def duration_s(text: str) -> int:
    """``90``, ``90s``, ``15m``, ``1h``, ``7d`` → seconds (argparse reports what it cannot read)."""
    found = _DURATION.fullmatch(text.lower())
    if found is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration such as 90s, 15m, 1h or 7d")
    return int(found[1]) * _UNIT_S[found[2]]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``share`` and ``unshare`` to the parser."""
    share = sub.add_parser("share", help="make a read-only link to one of your runs (prints the URL)")
    share.add_argument("run_id", help="a run id, or a unique start or 6-character end of one")
    share.add_argument(
        "--expires", type=duration_s, default=None, help="e.g. 1h or 7d (60 s to 30 days); default: never"
    )
    share.add_argument("--revoke", metavar="SHARE_ID", default=None, help="revoke this link of the run")
    share.set_defaults(func=client(cmd_share))
    unshare = sub.add_parser("unshare", help="revoke a share link (give the URL `share` printed)")
    unshare.add_argument("link", help="the link's URL or token")
    unshare.set_defaults(func=client(cmd_unshare))


def cmd_share(ns: argparse.Namespace, settings: ClientSettings) -> int:
    with Api(settings) as api:
        run_id = resolve(api, ns.run_id)
        if ns.revoke:
            return _revoke(api, run_id, ns.revoke)
        made = api.share(run_id, ns.expires)
    link, expires = absolute(settings.api_url, made), made.get("expiresAt")
    print(link)
    until = f"until {expires}" if expires else "until revoked"
    print(f"read-only, {until}: whoever has the link sees this run")
    print(f"revoke with: {self_command()} unshare {link}")
    return EXIT_OK


def cmd_unshare(ns: argparse.Namespace, settings: ClientSettings) -> int:
    run_id, share_id = parse_link(ns.link)
    with Api(settings) as api:
        return _revoke(api, run_id, share_id)


def _revoke(api: Api, run_id: str, share_id: str) -> int:
    api.revoke_share(run_id, share_id)
    print(f"share {share_id} of run {run_id} is revoked: the link no longer opens it")
    return EXIT_OK


def absolute(api_url: str, made: Json) -> str:
    url = str(made.get("url", ""))
    return url if "://" in url else api_url.rstrip("/") + url


def parse_link(link: str) -> tuple[str, str]:
    """(run id, share id) of a share URL or token (``…/shared/{runId}.{shareId}.{secret}``)."""
    token = link.rstrip("/").rsplit("/", 1)[-1].split("?", 1)[0].split("#", 1)[0]
    parts = token.split(".")
    if len(parts) != 3 or not all(parts):
        raise ApiError(f"{link!r} is not a share link: expected …/shared/<run>.<share>.<secret>", 422, "link")
    return parts[0], parts[1]
