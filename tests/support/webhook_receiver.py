"""A webhook receiver as its own process, verifying every delivery with ``standardwebhooks``.

    python -m tests.support.webhook_receiver PORT SECRETS_JSON LOG_JSONL [--refuse-first]

``SECRETS_JSON`` maps a request path to its ``whsec_…`` secret; it is read on every request, so a
test may add secrets it learns later (a path without one yet is answered 503: try again). Every
request is one JSON line in ``LOG_JSONL``: ``{"path", "id", "type", "runId", "verified", "code"}``
(``verified`` null: no secret for the path yet, not checked).
A signature that does not verify is answered 400. ``--refuse-first`` answers 503 the first time
this process sees a ``webhook-id``, so every delivery is retried once, under the same id.
"""

from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import standardwebhooks


class Receiver(ThreadingHTTPServer):
    allow_reuse_address = True  # back on the same port right after the previous process was killed

    def __init__(self, port: int, secrets: Path, log: Path, refuse_first: bool) -> None:
        super().__init__(("127.0.0.1", port), Handler)
        self.secrets, self.log, self.refuse_first = secrets, log, refuse_first
        self.seen: set[str] = set()
        self.lock = threading.Lock()

    def answer(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        secret = json.loads(self.secrets.read_text()).get(path) if self.secrets.exists() else None
        line: dict[str, Any] = {"path": path, "id": headers.get("webhook-id"), "verified": None}
        if secret is None:
            return 503, line
        line["verified"] = False
        try:
            payload = standardwebhooks.Webhook(secret).verify(body, headers)
        except standardwebhooks.webhooks.WebhookVerificationError:
            return 400, line
        line |= {"verified": True, "type": payload["type"], "runId": payload["data"]["runId"]}
        with self.lock:
            first = line["id"] not in self.seen
            self.seen.add(line["id"])
        return (503 if self.refuse_first and first else 200), line

    def record(self, line: dict[str, Any]) -> None:
        with self.lock, self.log.open("a") as out:
            out.write(json.dumps(line) + "\n")


class Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        headers = {k.lower(): v for k, v in self.headers.items()}
        code, line = self.server.answer(self.path, headers, body)
        self.server.record(line | {"code": code})
        self.send_response(code)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the JSON lines are the log


def main(argv: list[str]) -> None:
    port, secrets, log = int(argv[0]), Path(argv[1]), Path(argv[2])
    server = Receiver(port, secrets, log, "--refuse-first" in argv[3:])
    sys.stdout.write("listening\n")
    sys.stdout.flush()
    server.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
