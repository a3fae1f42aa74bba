"""What a submit sends to the submit script and what its answer means.

The script's KEYS and ARGV layout lives here beside the outcomes a caller branches on, so
``EventStore.submit`` only decides how the call is sent (alone, pipelined, or with a ``WAIT``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from shared.events import AnyEvent, EventCodec, RunRequested
from shared.keys import Keys


@dataclass(frozen=True, slots=True)
class Submitted:
    run_id: str
    event_id: str


@dataclass(frozen=True, slots=True)
class Duplicate:
    """The idempotency key was seen: ``value`` is what the first request stored."""

    value: str


@dataclass(frozen=True, slots=True)
class Joined:
    """An identical request of the same user is pending or running: ``run_id`` is that run."""

    run_id: str


@dataclass(frozen=True, slots=True)
class Capped:
    cap: int


@dataclass(frozen=True, slots=True)
class Unreplicated:
    """On the primary, but no replica confirmed it within the bound (``WAIT``): not acknowledged.
    ``run_id``: the run just written; None for a repeat of a key whose run is not confirmed yet.
    A repeat with the same idempotency key answers this run once a replica has it."""

    run_id: str | None
    replicas: int


SubmitOutcome = Submitted | Duplicate | Joined | Capped | Unreplicated


@dataclass(frozen=True, slots=True)
class SubmitLayout:
    """Builds the submit script's KEYS and ARGV (their order is the script's, in ``shared.scripts``)."""

    keys: Keys
    codec: EventCodec
    run_ttl_s: int

    def of(
        self,
        event: RunRequested,
        cap: int,
        idempotency: tuple[str, str] | None,
        idempotency_ttl_s: int,
        join: tuple[str, bool] | None,
        webhook_secret: str,
        carried: Sequence[AnyEvent],
    ) -> tuple[list[str], list[bytes | str | int]]:
        k = self.keys
        queue = k.queue_high if event.priority == "high" else k.queue
        idem_key, idem_value = idempotency or ("", "")
        keys = [
            k.run(event.run_id),
            k.events,
            k.meta(event.run_id),
            k.active(event.user_id),
            queue,
            k.idem(event.user_id, idem_key) if idem_key else k.idem(event.user_id, "-"),
            k.join(event.user_id, join[0] if join else "-"),
            k.webhook_secret(event.run_id),
        ]
        argv: list[bytes | str | int] = [
            self.codec.encode(event),
            event.run_id,
            event.user_id,
            cap,
            idem_value,
            idempotency_ttl_s,
            k.meta(""),
            ("1" if join[1] else "0") if join else "",
            webhook_secret,
            self.run_ttl_s,
            *(self.codec.encode(e) for e in carried),
        ]
        return keys, argv


def outcome_of(run_id: str, reply: tuple[str, str], *, acked: int, wanted: int) -> SubmitOutcome:
    """The outcome of the script's (status, value) answer, ``acked`` of ``wanted`` replicas having
    confirmed it (a cap refusal writes nothing, so it needs no replica)."""
    status, value = reply
    if status == "capped":
        return Capped(int(value))
    if acked < wanted:
        return Unreplicated(run_id if status == "ok" else None, acked)
    if status == "duplicate":
        return Duplicate(value)
    if status == "joined":
        return Joined(value)
    return Submitted(run_id, value)
