"""The last event ID each watched run reached, kept on disk so `watch` resumes after a restart."""

from __future__ import annotations

import os
import re
from pathlib import Path

_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


class Cursors:
    """One small file a run under ``<state>/cli/``; written atomically (temp file + rename)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def path(self, run_id: str) -> Path:
        return self.folder / f"{_SAFE.sub('_', run_id)}.last-id"

    def load(self, run_id: str) -> str | None:
        try:
            text = self.path(run_id).read_text().strip()
        except FileNotFoundError:
            return None
        return text or None

    def save(self, run_id: str, event_id: str) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        target = self.path(run_id)
        temp = target.with_suffix(".tmp")
        temp.write_text(event_id)
        os.replace(temp, target)

    def forget(self, run_id: str) -> None:
        self.path(run_id).unlink(missing_ok=True)
