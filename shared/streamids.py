"""Redis stream IDs compared as numbers, never as strings."""

from __future__ import annotations

ZERO = "0-0"


def parse(stream_id: str) -> tuple[int, int]:
    """``"1712-3"`` → ``(1712, 3)``; a bare ``"1712"`` has sequence 0."""
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


def is_valid(stream_id: str) -> bool:
    """Whether ``stream_id`` is a Redis stream ID (``ms-seq`` or ``ms``), as a client may send."""
    if len(stream_id) > 41 or stream_id.count("-") > 1:
        return False
    try:
        ms, seq = parse(stream_id)
    except ValueError:
        return False
    return ms >= 0 and seq >= 0


def after(stream_id: str, than: str) -> bool:
    """Whether ``stream_id`` comes strictly after ``than``."""
    return parse(stream_id) > parse(than)


def successor(stream_id: str) -> str:
    """The smallest ID strictly after ``stream_id``."""
    ms, seq = parse(stream_id)
    return f"{ms}-{seq + 1}"


def millis(stream_id: str) -> int:
    return parse(stream_id)[0]


def earliest(*ids: str) -> str:
    return min(ids, key=parse)
