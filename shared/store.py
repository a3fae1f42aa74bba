"""The one way events are written: run stream and global log together, atomically.

Two Lua scripts keep the run's phase (queued → running → ended) beside its stream, so the rules
that must never break are enforced inside Redis, not by careful callers:
- nothing is appended after a terminal event (exactly one terminal event per run);
- a cancel of a queued run ends it at once, and a runner can no longer start it;
- a runner whose lease was taken over (stale fence) cannot append anything;
- the user's active-run set changes in the same step as the events that change it;
- a command re-sent after its reply was lost (the client's retry on a dropped connection) does
  not append twice: the meta hash remembers each appended event (by a hash of its bytes, which
  include its microsecond ``at``) and the run's request, and a repeat answers the first ID.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal, Protocol

from redis.asyncio import Redis

from shared.durability import ReplicaWait
from shared.events import (
    AnyEvent,
    EventCodec,
    EventError,
    RunCancelled,
    RunFailed,
    RunRequested,
    RunRetrying,
    RunStarted,
    ShareCreated,
    ShareRevoked,
    UnknownEvent,
    WebhookAttempted,
    is_terminal,
)
from shared.keys import EVENT_FIELD, RUN_ID_FIELD, Keys
from shared.reducer import fold
from shared.run_state import RunState
from shared.scripts import APPEND, APPEND_ALL, END_LOST, SUBMIT, ScriptCall, evalsha_pipelined
from shared.submits import SubmitLayout, SubmitOutcome, outcome_of

logger = logging.getLogger(__name__)

Entry = tuple[str, AnyEvent]
Transition = Literal["start", "event", "retry", "terminal", "cancel", "abandon", "after", "note"]

_BATCH_RUNS = 16
"""Runs per script call of ``append_batch`` (bounds how long one call holds Redis)."""


class StoreError(Exception):
    """Base of what the event store refuses."""


class RefusalReason(StrEnum):
    """Why the append or end-lost script refused: the strings the scripts answer."""

    UNKNOWN = "unknown"
    """Redis knows no such run (or a cancel came from a user who does not own it)."""
    ENDED = "ended"
    """The run has its terminal event."""
    FENCED = "fenced"
    """Another execution (a newer fence) owns the run."""
    QUEUED = "queued"
    """A runner's event for a run that is not started (it was handed back to the queue)."""
    KNOWN = "known"
    """``end_lost``: Redis knows the run, so it was not lost."""


class Refused(StoreError):
    """The append broke a rule of the run's phase; ``reason`` says which."""

    def __init__(self, run_id: str, reason: RefusalReason | str, appended: Sequence[str] = ()) -> None:
        self.reason = RefusalReason(reason)
        super().__init__(f"append to run {run_id} refused: {self.reason}")
        self.run_id = run_id
        self.appended = list(appended)
        """``append_batch``: IDs of the run's events appended before the refused one."""


@dataclass(frozen=True, slots=True)
class Appends:
    """Events of one run to append in order with one fence (an item of ``append_batch``).

    ``owner``: the run's user, when the caller knows it (saves a lookup for a terminal event).
    ``ack``: (queue, group, entry ID) of the queue entry to ack in the same atomic step, unless
    the appends were refused as ``fenced`` (another runner owns the run now).
    """

    events: Sequence[AnyEvent]
    fence: str = ""
    owner: str | None = None
    ack: tuple[str, str, str] | None = None


class ScriptSender(Protocol):
    """What sends script calls for the store (``shared.batcher.ScriptBatcher``: concurrent calls
    share a round trip)."""

    async def call(self, call: ScriptCall) -> Any:
        """The script's reply; an error reply raises."""


def transition_of(event: AnyEvent) -> Transition:
    """Which phase rule an event's append follows."""
    match event:
        case RunStarted():
            return "start"
        case RunCancelled():
            return "cancel"
        case RunRetrying() | RunFailed(will_retry=True):
            return "retry"
        case WebhookAttempted():
            return "after"
        case ShareCreated() | ShareRevoked():
            return "note"
    return "terminal" if is_terminal(event) else "event"


class EventStore:
    """Appends and reads run events; every service writes through one of these."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        *,
        run_ttl_s: int = 48 * 3600,
        codec: EventCodec | None = None,
        submits: ScriptSender | None = None,
        appends: ScriptSender | None = None,
        replicas: ReplicaWait | None = None,
    ) -> None:
        """``submits`` / ``appends``: what sends the submit / append scripts (a
        ``shared.batcher.ScriptBatcher`` pipelines concurrent calls; the scripts are safe to run
        twice); by default each is its own EVALSHA. ``replicas``: while the primary has replicas,
        a submit is sent with a ``WAIT`` instead (``shared.durability``)."""
        self.redis = redis
        self.submits = submits
        self.appends = appends
        self.replicas = replicas
        self.keys = keys
        self.codec = codec or EventCodec()
        self.run_ttl_s = run_ttl_s
        self.skipped = 0
        self._append = redis.register_script(APPEND)
        self._append_all = redis.register_script(APPEND_ALL)
        self._submit = redis.register_script(SUBMIT)
        self._end_lost = redis.register_script(END_LOST)
        self._layout = SubmitLayout(keys, self.codec, run_ttl_s)

    async def submit(
        self,
        event: RunRequested,
        *,
        cap: int = 0,
        idempotency: tuple[str, str] | None = None,
        idempotency_ttl_s: int = 24 * 3600,
        join: tuple[str, bool] | None = None,
        webhook_secret: str = "",
        carried: Sequence[AnyEvent] = (),
    ) -> SubmitOutcome:
        """Record a request and queue it, unless the key was seen or the user is at the cap.

        Args:
            idempotency: (key, value) — ``value`` is stored under the key and returned to a
                later duplicate (the gateway stores the run id and a hash of the body).
            join: (fingerprint, whether to join) — with True, a pending or running run of the
                user recorded under the fingerprint is answered (``Joined``) instead; either
                way a new run is recorded under it until it ends.
            webhook_secret: stored beside the run (its TTL), never in its events.
            carried: events of this run appended right after its request, in the same step.
        """
        keys, argv = self._layout.of(
            event, cap, idempotency, idempotency_ttl_s, join, webhook_secret, carried
        )
        wanted = await self.replicas.needed() if self.replicas is not None else 0
        acked = wanted
        call = ScriptCall(self._submit.sha, SUBMIT, keys, argv)
        if wanted and self.replicas is not None:
            reply, acked = await self.replicas.call(call, wanted)
        elif self.submits is not None:
            reply = await self.submits.call(call)
        else:
            reply = await self._submit(keys=keys, args=argv)
        return outcome_of(event.run_id, _pair(reply), acked=acked, wanted=wanted)

    async def append(self, event: AnyEvent, *, fence: str = "", owner: str | None = None) -> str:
        """Append one event to its run stream and the global log; returns its run-stream ID.

        ``owner``: the run's user if the caller knows it (a terminal event then needs no lookup).

        Raises:
            Refused: the run has ended, is unknown, or ``fence`` is not the current owner's.
        """
        k, run_id = self.keys, event.run_id
        transition = transition_of(event)
        user_id = event.user_id if isinstance(event, RunCancelled | ShareCreated | ShareRevoked) else ""
        if not user_id and transition == "terminal":
            user_id = owner if owner is not None else await self.owner(run_id)
        keys = [k.run(run_id), k.events, k.meta(run_id), k.active(user_id or "-"), k.cancels]
        argv: list[bytes | str | int] = [
            self.codec.encode(event),
            run_id,
            transition,
            self.run_ttl_s,
            fence,
            user_id,
        ]
        if self.appends is not None:
            reply = await self.appends.call(ScriptCall(self._append.sha, APPEND, keys, argv))
        else:
            reply = await self._append(keys=keys, args=argv)
        status, value = _pair(reply)
        if status != "ok":
            raise Refused(run_id, value)
        return value

    async def append_batch(self, batch: Sequence[Appends]) -> list[list[str] | Refused]:
        """Several runs' appends in one round trip (one script call per ``_BATCH_RUNS`` runs).

        Each item's events are appended in order, atomically, each under ``append``'s rules,
        stopping at the first refused one. Per item: the run-stream IDs, or ``Refused`` (its
        ``appended`` lists the IDs written before the refusal). A Redis error raises (what was
        appended before it stays; callers leave their queue entries pending).
        """
        calls: list[ScriptCall] = []
        for start in range(0, len(batch), _BATCH_RUNS):
            keys: list[str] = []
            args: list[bytes | str | int] = []
            for item in batch[start : start + _BATCH_RUNS]:
                await self._add_appends(item, keys, args)
            calls.append(ScriptCall(self._append_all.sha, APPEND_ALL, keys, args))
        mine = await self._send_all(calls)
        for reply in mine:
            if isinstance(reply, Exception):
                raise reply
        out: list[list[str] | Refused] = []
        runs = (reply for chunk in mine for reply in chunk)
        for item, reply in zip(batch, runs, strict=True):
            status, reason, ids = _text(reply[0]), _text(reply[1]), [_text(x) for x in reply[2] or ()]
            run_id = item.events[0].run_id if item.events else ""
            out.append(ids if status == "ok" else Refused(run_id, reason, ids))
        return out

    async def _send_all(self, calls: list[ScriptCall]) -> list[Any]:
        """Replies in order, an error reply as its exception: in one round trip of their own,
        or in the ones ``appends`` shares with other calls."""
        if self.appends is None:
            return await evalsha_pipelined(self.redis, calls)
        sent = await asyncio.gather(*(self.appends.call(c) for c in calls), return_exceptions=True)
        for reply in sent:
            if isinstance(reply, BaseException) and not isinstance(reply, Exception):
                raise reply
        return list(sent)

    async def _add_appends(self, item: Appends, keys: list[str], args: list[bytes | str | int]) -> None:
        k = self.keys
        run_id = item.events[0].run_id if item.events else ""
        if any(e.run_id != run_id for e in item.events):
            raise ValueError("one Appends item holds the events of one run")
        owner = item.owner
        if owner is None and any(transition_of(e) == "terminal" for e in item.events):
            owner = await self.owner(run_id)
        queue, group, entry_id = item.ack or (k.queue, "", "")
        keys += [k.run(run_id), k.events, k.meta(run_id), k.active(owner or "-"), queue]
        args += [group, entry_id, run_id, self.run_ttl_s, item.fence, len(item.events)]
        for event in item.events:
            transition = transition_of(event)
            user_id = event.user_id if isinstance(event, RunCancelled | ShareCreated | ShareRevoked) else ""
            if not user_id and transition == "terminal":
                user_id = owner or ""
            args += [self.codec.encode(event), transition, user_id]

    async def abandon(self, event: AnyEvent) -> str:
        """Append a terminal event whatever the phase and owner (dead-lettering a run)."""
        k, run_id = self.keys, event.run_id
        keys = [k.run(run_id), k.events, k.meta(run_id), k.active(await self.owner(run_id))]
        argv: list[bytes | str | int] = [self.codec.encode(event), run_id, "abandon", self.run_ttl_s, "", ""]
        status, value = _pair(await self._append(keys=keys, args=argv))
        if status != "ok":
            raise Refused(run_id, value)
        return value

    async def end_lost(self, failure: RunFailed, *, request: RunRequested | None, user_id: str) -> str:
        """End a run whose meta hash Redis lost (a failover dropped it): ``request`` (the run's
        rebuilt ``RunRequested``, when known) then ``failure`` are appended, and the meta hash is
        recreated as ``ended``, atomically. Returns the failure's run-stream ID.

        Raises:
            Refused: ``known`` — Redis knows the run (its meta hash exists), nothing was written.
            ValueError: ``failure`` would be retried, or ``request`` names another run.
        """
        if failure.will_retry or (request is not None and request.run_id != failure.run_id):
            raise ValueError("end_lost takes a final RunFailed and the same run's request")
        k, run_id = self.keys, failure.run_id
        events = [e for e in (request, failure) if e is not None]
        keys = [k.run(run_id), k.events, k.meta(run_id), k.active(user_id or "-")]
        argv: list[bytes | str | int] = [run_id, user_id, self.run_ttl_s, "1" if request else "0"]
        argv += [self.codec.encode(e) for e in events]
        status, value = _pair(await self._end_lost(keys=keys, args=argv))
        if status != "ok":
            raise Refused(run_id, value)
        return value

    async def owner(self, run_id: str) -> str:
        """The user a run belongs to ('' when Redis no longer knows the run)."""
        user = await self.redis.hget(self.keys.meta(run_id), "user")
        return _text(user) if user is not None else ""

    async def phase(self, run_id: str) -> str:
        phase = await self.redis.hget(self.keys.meta(run_id), "phase")
        return _text(phase) if phase is not None else ""

    async def read(self, run_id: str, after: str = "0", count: int | None = None) -> list[Entry]:
        """Events of a run strictly after ``after`` (a stream ID; "0" for all of them)."""
        start = "-" if after in ("0", "0-0", "-") else f"({after}"
        raw = await self.redis.xrange(self.keys.run(run_id), min=start, max="+", count=count)
        return self.decode_entries(raw)

    async def state(self, run_id: str) -> RunState | None:
        """The fold of a run's whole stream; None when Redis has no events for it."""
        entries = await self.read(run_id)
        return fold(run_id, entries) if entries else None

    def decode_entries(self, raw: Sequence[Any] | None) -> list[Entry]:
        """Decoded (ID, event) pairs; entries that are not events are counted and skipped."""
        out: list[Entry] = []
        for entry_id, fields in raw or ():
            event = self.decode_fields(_text(entry_id), fields)
            if event is not None:
                out.append((_text(entry_id), event))
        return out

    def decode_fields(self, entry_id: str, fields: dict[bytes | str, bytes | str]) -> AnyEvent | None:
        data = fields.get(EVENT_FIELD.encode()) or fields.get(EVENT_FIELD)
        try:
            if data is None:
                raise EventError("entry has no event field")
            return self.codec.decode(data)
        except UnknownEvent as exc:
            self.skipped += 1
            logger.info("skipped entry %s: %s", entry_id, exc)
        except EventError as exc:
            self.skipped += 1
            logger.warning("skipped malformed entry %s: %s", entry_id, exc)
        return None


def entry_run_id(fields: dict[bytes | str, bytes | str]) -> str:
    """The run id a queue or global-log entry names ('' if it names none).

    Bytes that are not UTF-8 come back with replacement characters: a run id no run has, so the
    entry is dead-lettered as poison instead of failing every read or claim of its queue.
    """
    value = fields.get(RUN_ID_FIELD.encode()) or fields.get(RUN_ID_FIELD)
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return _text(value) if value is not None else ""


def _pair(reply: Any) -> tuple[str, str]:
    return _text(reply[0]), _text(reply[1])


def _text(value: bytes | str | int) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
