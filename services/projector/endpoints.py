"""Operator-configured webhook endpoints: every terminal event of a user's runs, delivered there too.

``TT_WEBHOOK_ENDPOINTS`` is inline JSON or the path of a JSON or TOML file, one shape in both:
per user id, a list of ``{url, events, secret, name}``::

    {"alice": [{"url": "https://hooks.example/tt", "secret": "whsec_…", "events": ["run.failed"]}]}

    [[alice]]                       # the same in TOML
    url = "https://hooks.example/tt"
    secret = "whsec_…"

``events`` defaults to all four kinds; ``name`` (``a-z 0-9 -``, up to 40) defaults to a digest of
the URL and makes the ``webhook-id`` (``msg_<runId>_<name>``), so it must stay put for receivers
to deduplicate across a restart. A bad entry fails the projector at start with a message naming
the user and the entry, never the secret. The secret lives here and in the projector's memory
only: deliveries in Redis name the endpoint, attempts (events) carry its name, never its secret.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.config import ConfigError
from shared.events import WEBHOOK_EVENT_TYPES, WebhookEventType
from shared.webhooks import AllowList, UnsafeTarget, check_url, secret_key

VARIABLE = "TT_WEBHOOK_ENDPOINTS"
_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,39}")
_FIELDS = frozenset({"url", "events", "secret", "name"})


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One operator endpoint of one user."""

    user_id: str
    name: str
    url: str
    events: tuple[WebhookEventType, ...]
    secret: str = field(repr=False)

    def delivery_id(self, run_id: str) -> str:
        """The ``webhook-id`` of this endpoint's delivery of the run's end: stable across retries."""
        return f"msg_{run_id}_{self.name}"


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Every configured endpoint, looked up by user (to schedule) or by user and name (to send)."""

    all: tuple[Endpoint, ...] = ()

    def of(self, user_id: str) -> tuple[Endpoint, ...]:
        return tuple(e for e in self.all if e.user_id == user_id)

    def get(self, user_id: str, name: str) -> Endpoint | None:
        return next((e for e in self.all if e.user_id == user_id and e.name == name), None)


NONE = Endpoints()
"""No operator endpoints (the default)."""


def load(value: str | None, allow: AllowList) -> Endpoints:
    """The endpoints ``TT_WEBHOOK_ENDPOINTS`` names (none when unset); ConfigError if malformed."""
    if value is None or not value.strip():
        return NONE
    text, where = value, VARIABLE
    if not value.lstrip().startswith("{"):
        path = Path(value.strip()).expanduser()
        where = f"{VARIABLE} ({path})"
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigError(f"{where}: cannot read the file: {exc.strerror}") from None
        if path.suffix == ".toml":
            return parse(_toml(text, where), allow, where)
    return parse(_json(text, where), allow, where)


def _json(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{where}: not JSON: {exc}") from None


def _toml(text: str, where: str) -> Any:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: not TOML: {exc}") from None


def parse(doc: Any, allow: AllowList, where: str = VARIABLE) -> Endpoints:
    """Validate the decoded document: a map of user id → list of endpoint tables."""
    if not isinstance(doc, Mapping):
        raise ConfigError(f"{where} must map user ids to lists of endpoints")
    found: list[Endpoint] = []
    for user_id, entries in doc.items():
        if not isinstance(entries, list) or not entries:
            raise ConfigError(f"{where}: user {user_id!r}: a non-empty list of endpoints is expected")
        found.extend(_user(str(user_id), entries, allow, where))
    return Endpoints(tuple(found))


def _user(user_id: str, entries: list[Any], allow: AllowList, where: str) -> Iterable[Endpoint]:
    names: set[str] = set()
    for index, entry in enumerate(entries, start=1):
        label = f"{where}: user {user_id!r}, endpoint {index}"
        endpoint = _endpoint(user_id, entry, allow, label)
        if endpoint.name in names:
            raise ConfigError(f"{label}: the name {endpoint.name!r} is used twice for this user")
        names.add(endpoint.name)
        yield endpoint


def _endpoint(user_id: str, entry: Any, allow: AllowList, label: str) -> Endpoint:
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{label}: an endpoint is a table of url, secret, events and name")
    unknown = sorted(set(entry) - _FIELDS)
    if unknown:
        raise ConfigError(f"{label}: unknown field {unknown[0]!r} (fields: events, name, secret, url)")
    url = entry.get("url")
    if not isinstance(url, str):
        raise ConfigError(f"{label}: url is required (a string)")
    try:
        check_url(url, allow)
    except UnsafeTarget as exc:
        raise ConfigError(f"{label}: url: {exc}") from None  # a URL may hold a token: not repeated
    name = entry.get("name", hashlib.sha256(url.encode()).hexdigest()[:12])
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(f"{label}: name must be 1-40 of a-z 0-9 - (starting with a letter or digit)")
    return Endpoint(user_id, name, url, _events(entry.get("events"), label), _secret(entry, label))


def _events(raw: Any, label: str) -> tuple[WebhookEventType, ...]:
    if raw is None:
        return WEBHOOK_EVENT_TYPES
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{label}: events must be a non-empty list of {', '.join(WEBHOOK_EVENT_TYPES)}")
    kinds: list[WebhookEventType] = []
    for kind in raw:
        if kind not in WEBHOOK_EVENT_TYPES:
            raise ConfigError(f"{label}: events: {kind!r} is not one of {', '.join(WEBHOOK_EVENT_TYPES)}")
        kinds.append(kind)
    return tuple(dict.fromkeys(kinds))


def _secret(entry: Mapping[str, Any], label: str) -> str:
    """The ``whsec_…`` secret; what is wrong with it is said without repeating it."""
    secret = entry.get("secret")
    if not isinstance(secret, str):
        raise ConfigError(f"{label}: secret is required (whsec_ followed by base64 of 24-64 bytes)")
    try:
        secret_key(secret)
    except ValueError as exc:
        raise ConfigError(f"{label}: secret: {exc}") from None
    return secret
