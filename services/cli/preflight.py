"""What `tickertape up` checks before it starts anything: one stack per state folder, free ports.

A second `up` on the same state folder would start a second redis-server on the same AOF files
and fight the first over every port; it must refuse before touching either. The lock is an
exclusive ``flock`` held for the launcher's life (the kernel drops it however the launcher ends,
so it never goes stale), and the file beside it says who holds it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

LOCK_NAME = "up.lock"


class AlreadyRunning(Exception):
    """Another `up` holds this state folder; the message names it."""


class StateLock:
    """The exclusive hold of one `up` on its state folder, with a JSON note of pid and ports."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.path = state_dir / LOCK_NAME
        self._file: IO[str] | None = None
        self.note: dict[str, Any] = {}

    def check(self) -> None:
        """Raise `AlreadyRunning` if another `up` holds the folder; creates nothing."""
        try:
            file = open(self.path)
        except FileNotFoundError:
            return
        with file:
            self._take_or_refuse(file)

    def acquire(self, note: Mapping[str, Any]) -> None:
        """Take the lock or raise `AlreadyRunning`; the note is written only once it is ours."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        file = open(self.path, "a+")  # held open for the launcher's life
        try:
            self._take_or_refuse(file)
        except AlreadyRunning:
            file.close()
            raise
        self._file = file
        self.note = {**note, "pid": os.getpid(), "started_at": time.time()}
        self._write()

    def add(self, **fields: Any) -> None:
        """Add to the note (once known: the URLs the CLI's other commands then use)."""
        self.note.update(fields)
        if self._file is not None:
            self._write()

    def _write(self) -> None:
        assert self._file is not None
        self._file.seek(0)
        self._file.truncate()
        self._file.write(json.dumps(self.note))
        self._file.flush()

    def _take_or_refuse(self, file: IO[str]) -> None:
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.seek(0)
            raise AlreadyRunning(self._refusal(_parse(file.read()))) from None

    def _refusal(self, holder: Mapping[str, Any]) -> str:
        pid = holder.get("pid", "?")
        port = holder.get("gateway_port", "?")
        return (
            f"Tickertape is already running (pid {pid}, gateway on http://localhost:{port}) "
            f"— state dir {self.state_dir}"
        )

    def release(self) -> None:
        file, self._file = self._file, None
        if file is not None:
            file.close()  # closing the descriptor drops the flock; the note stays for debugging


def stack_note(state_dir: Path) -> dict[str, Any]:
    """The note of the `up` running on ``state_dir`` (``api_url``, ``redis_url``, ports, pid), or
    {} when none does: its process is gone, or the note is from before it knew its URLs. Read
    without taking the lock, so a CLI command never makes a starting `up` think it is taken."""
    try:
        note = _parse((state_dir / LOCK_NAME).read_text())
    except OSError:
        return {}
    pid = note.get("pid")
    if not isinstance(pid, int) or not _alive(pid):
        return {}
    return note


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


def _parse(text: str) -> dict[str, Any]:
    with contextlib.suppress(ValueError):
        note = json.loads(text)
        if isinstance(note, dict):
            return note
    return {}


def port_in_use(port: int) -> bool:
    """Whether a listener holds ``port`` on the loopback (or on every interface)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As uvicorn binds: a port left in TIME_WAIT by a previous run is free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def busy_ports(ports: Mapping[str, tuple[int, str]]) -> list[str]:
    """One message per port in use; ``ports`` maps a service to (port, the variable that moves it)."""
    return [
        f"port {port} is in use: set {variable} to move the {name}"
        for name, (port, variable) in ports.items()
        if port and port_in_use(port)
    ]
