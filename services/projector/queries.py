"""Read-only queries of the read models, answering with the stored RunState JSON as is."""

from __future__ import annotations

import base64
import binascii

import aiosqlite
import msgspec

from shared.run_state import STATUSES

ACTIVE = "active"
MAX_LIMIT = 200


class CursorError(ValueError):
    """A pagination cursor that this projector did not hand out."""


class Page(msgspec.Struct, frozen=True):
    states: list[str]
    next_cursor: str | None


def encode_cursor(requested_us: int, run_id: str) -> str:
    """An opaque cursor: base64url of (requested time, run id) of the last run on a page."""
    return base64.urlsafe_b64encode(msgspec.json.encode((requested_us, run_id))).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        return msgspec.json.decode(raw, type=tuple[int, str])
    except (binascii.Error, ValueError, msgspec.DecodeError) as exc:
        raise CursorError(f"not a cursor of this API: {cursor!r}") from exc


class Queries:
    """The queries the gateway asks, on a read-only connection (WAL: never blocks the writer)."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self.db = db

    async def get(self, run_id: str, user_id: str) -> str | None:
        """One run's state JSON, only if it belongs to ``user_id``."""
        sql = "SELECT state FROM runs WHERE run_id = ? AND user_id = ?"
        async with self.db.execute(sql, (run_id, user_id)) as cursor:
            row = await cursor.fetchone()
        return str(row[0]) if row else None

    async def page(
        self,
        user_id: str,
        *,
        symbol: str | None,
        status: str | None,
        limit: int,
        cursor: str | None,
        archived: bool = False,
    ) -> Page:
        """A user's runs newest first, filtered, after ``cursor``; ``archived``: those retention
        moved out of the history (``runs_archive``), in the same shape."""
        where: list[str] = ["user_id = ?"]
        args: list[str | int] = [user_id]
        if symbol:
            where.append("symbol = ?")
            args.append(symbol)
        if status == ACTIVE:
            where.append("status IN ('pending', 'running')")
        elif status:
            where.append("status = ?")
            args.append(status)
        if cursor:
            requested_us, run_id = decode_cursor(cursor)
            where.append("(requested_us, run_id) < (?, ?)")
            args.extend((requested_us, run_id))
        sql = (
            f"SELECT requested_us, run_id, state FROM {'runs_archive' if archived else 'runs'} "
            f"WHERE {' AND '.join(where)} "
            "ORDER BY requested_us DESC, run_id DESC LIMIT ?"
        )
        async with self.db.execute(sql, [*args, limit + 1]) as rows:
            found = list(await rows.fetchall())
        more = len(found) > limit
        found = found[:limit]
        next_cursor = encode_cursor(int(found[-1][0]), str(found[-1][1])) if more else None
        return Page([str(row[2]) for row in found], next_cursor)

    async def counts(self, user_id: str) -> dict[str, int]:
        """How many runs the user has in each status (every status present, zero included)."""
        counts = dict.fromkeys(STATUSES, 0)
        sql = "SELECT status, count(*) FROM runs WHERE user_id = ? GROUP BY status"
        async with self.db.execute(sql, (user_id,)) as rows:
            for status, n in await rows.fetchall():
                counts[str(status)] = int(n)
        return counts

    async def checkpoint(self) -> str:
        async with self.db.execute("SELECT last_id FROM checkpoint WHERE id = 1") as cursor:
            row = await cursor.fetchone()
        return str(row[0]) if row else "0-0"
