"""RFC 9457 problem details: the one place every service builds its error bodies.

No web framework here: the runner's health responder writes raw HTTP, the gateway and projector
wrap these bytes in their framework's response.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

PROBLEM_JSON = "application/problem+json"
PROBLEM_BASE = "https://tickertape.dev/problems/"
TITLES = {
    400: "Bad request",
    401: "Not authenticated",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    406: "Not acceptable",
    409: "Conflict",
    413: "Request body too large",
    415: "Unsupported media type",
    422: "Invalid request",
    429: "Too many requests",
    500: "Internal error",
    503: "Service unavailable",
}
SLUGS = {
    401: "unauthorized",
    404: "not-found",
    405: "method-not-allowed",
    413: "too-large",
    422: "validation",
}


def problem_doc(
    status: int,
    detail: str,
    *,
    slug: str | None = None,
    title: str | None = None,
    instance: str | None = None,
    field: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The problem's JSON object; ``slug`` names its ``type``, ``field`` the failing input."""
    doc: dict[str, Any] = {
        "type": PROBLEM_BASE + (slug or SLUGS.get(status, f"http-{status}")),
        "title": title or TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
    }
    if instance:
        doc["instance"] = instance
    if field is not None:
        doc["field"] = field
    doc.update(extra or {})
    return doc


def problem_bytes(status: int, detail: str, **members: Any) -> bytes:
    """``problem_doc`` encoded as the body of an ``application/problem+json`` answer."""
    return json.dumps(problem_doc(status, detail, **members), separators=(",", ":")).encode()
