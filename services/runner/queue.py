"""The work queue seen by one runner: read, lease, claim, release, ack and dead-letter entries.

Facts this leans on (checked on Redis 6.2, handled for 7.x too):
- ``XCLAIM … 0 id… JUSTID`` by the owner resets the entries' idle time without raising their
  delivery count: that is the lease renewal, one script per queue per tick whatever the number
  of runs (one XPENDING of this consumer's entries, one XCLAIM of those still ours), so a runner
  whose lease lapsed cannot steal its run back and renewals cost the same at 1 or 1,000 runs.
- ``XAUTOCLAIM`` hands over any entry idle past the lease, the claimer's own included: a claim
  that returns an entry this runner is executing gives it back its delivery count and skips it
  (a runner never takes over its own run).
- ``XCLAIM … IDLE ms [RETRYCOUNT n] JUSTID`` hands an entry over early: it becomes claimable
  as soon as its idle time passes the lease.
- On 6.2 an entry deleted while pending comes back from ``XAUTOCLAIM`` as nil and stays in the
  PEL (now ours): find and ack it. 7.x drops it and lists its ID in a third reply element.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from shared.keys import RUNNERS_GROUP, Keys
from shared.scripts import ScriptCall, evalsha_pipelined
from shared.store import entry_run_id

logger = logging.getLogger(__name__)

_RENEW = """
local mine = {}
for _, row in ipairs(redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', ARGV[3], ARGV[2])) do
  mine[row[1]] = true
end
local held = {}
for i = 4, #ARGV do
  if mine[ARGV[i]] then held[#held + 1] = ARGV[i] end
end
for first = 1, #held, 500 do
  local call = {'XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0}
  for j = first, math.min(first + 499, #held) do call[#call + 1] = held[j] end
  call[#call + 1] = 'JUSTID'
  redis.call(unpack(call))
end
return held
"""
"""Renew the entries in ARGV[4..] that consumer ARGV[2] still owns; returns those. ARGV[3] bounds
the XPENDING scan of its entries (held ones plus those waiting out a retry backoff). XCLAIM takes
ids in chunks: Lua's unpack has a bounded stack."""

_PEL_SLACK = 10_000

_READ = """
local out, left = {}, tonumber(ARGV[3])
for i = 1, #KEYS do
  if left <= 0 then break end
  local reply = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', left, 'STREAMS', KEYS[i], '>')
  if reply then
    for _, entry in ipairs(reply[1][2]) do
      local run, fields = '', entry[2]
      for j = 1, #fields, 2 do
        if fields[j] == 'r' then run = fields[j + 1] end
      end
      local events = {}
      if ARGV[4] ~= '' and run ~= '' then events = redis.call('XRANGE', ARGV[4] .. run, '-', '+') end
      out[#out + 1] = {i, entry[1], run, events}
      left = left - 1
    end
  end
end
return out
"""
"""Up to ARGV[3] never-delivered entries from the queues in KEYS, in that (priority) order, and,
with a run-stream key prefix in ARGV[4], each entry's run stream, in one round trip. The count is
exact across queues, which one XREADGROUP over several streams (COUNT applies per stream) is not.
The run-stream keys are derived in the script (as the submit script derives meta keys): fine on
one Redis, not on a cluster."""

RawEntry = tuple[bytes, dict[bytes, bytes]]


@dataclass(frozen=True, slots=True)
class Job:
    """One queue entry this runner holds; ``run_id`` is '' for an entry naming no run."""

    queue: str
    entry_id: str
    run_id: str
    deliveries: int
    reclaimed: bool = False
    enqueued_at: float = 0.0
    """Unix time the entry was queued (from its ID)."""


@dataclass(frozen=True, slots=True)
class ClaimBatch:
    jobs: list[Job]
    cursor: str
    dropped: int
    """Entries deleted or trimmed while pending, acked (6.2) or dropped by Redis (7.x)."""
    kept: int = 0
    """Entries this runner is executing that the claim found idle past the lease (renewed late)."""


class WorkQueue:
    """Queue operations of consumer ``consumer`` in group ``runners``."""

    def __init__(
        self,
        redis: Redis,
        reader: Redis,
        keys: Keys,
        consumer: str,
        lease_ms: int,
        *,
        renewer: Redis | None = None,
    ) -> None:
        """``renewer``: the client lease renewals go through; a client of their own keeps them
        from waiting behind the runs' appends for a pooled connection."""
        self.redis = redis
        self.reader = reader
        self.renewer = renewer or redis
        self.keys = keys
        self.group = RUNNERS_GROUP
        self.consumer = consumer
        self.lease_ms = lease_ms
        self._renew = redis.register_script(_RENEW)
        self._read = redis.register_script(_READ)

    async def read_batch(self, queues: Sequence[str], count: int) -> list[Job]:
        """Up to ``count`` never-delivered entries, highest-priority queue first; never blocks."""
        return [job for job, _ in await self.read_batch_with_runs(queues, count, "")]

    async def read_batch_with_runs(
        self, queues: Sequence[str], count: int, run_prefix: str
    ) -> list[tuple[Job, list[RawEntry]]]:
        """``read_batch`` plus each entry's run stream (raw, as XRANGE gives it) read in the same
        step from key ``run_prefix + run id`` ('' reads none)."""
        (reply,) = await evalsha_pipelined(self.redis, [self.read_call(queues, count, run_prefix)])
        if isinstance(reply, Exception):
            raise reply
        return self.parse_read(queues, reply)

    def read_call(self, queues: Sequence[str], count: int, run_prefix: str) -> ScriptCall:
        """The read of ``read_batch_with_runs`` as a script call, to send along with others."""
        return ScriptCall(self._read.sha, _READ, list(queues), [self.group, self.consumer, count, run_prefix])

    def parse_read(self, queues: Sequence[str], reply: Any) -> list[tuple[Job, list[RawEntry]]]:
        out = []
        for index, eid, run, events in reply or ():
            run_id = run.decode(errors="replace") if isinstance(run, bytes) else str(run or "")
            job = Job(queues[int(index) - 1], _text(eid), run_id, 1, enqueued_at=id_time(eid))
            out.append((job, [(sid, _pairs(fields)) for sid, fields in events or ()]))
        return out

    async def read_new(self, queues: Sequence[str], count: int, block_ms: int | None) -> list[Job]:
        """Never-delivered entries, highest-priority queue first; blocks only if ``block_ms``."""
        client = self.reader if block_ms else self.redis
        reply: Any = await client.xreadgroup(
            self.group, self.consumer, dict.fromkeys(queues, ">"), count=count, block=block_ms
        )
        jobs = [
            Job(_text(queue), _text(eid), entry_run_id(fields or {}), 1, enqueued_at=id_time(eid))
            for queue, entries in reply or ()
            for eid, fields in entries
        ]
        order = {q: i for i, q in enumerate(queues)}
        return sorted(jobs, key=lambda j: order.get(j.queue, 0))

    async def claim_idle(self, queue: str, cursor: str, count: int, held: Collection[str]) -> ClaimBatch:
        """Take over entries idle longer than the lease (their runner died); ``held``: the
        entries this runner executes, which are never taken over, only kept."""
        reply: Any = await self.redis.xautoclaim(
            queue, self.group, self.consumer, self.lease_ms, start_id=cursor, count=count
        )
        next_cursor, entries = _text(reply[0]), reply[1]
        dropped = len(reply[2]) if len(reply) > 2 and reply[2] else 0
        jobs: list[Job] = []
        kept = 0
        for eid, fields in entries:
            if eid is None:
                continue
            deliveries = await self.deliveries(queue, _text(eid))
            if _text(eid) in held:
                await self._keep(queue, _text(eid), deliveries)
                kept += 1
                continue
            run_id = entry_run_id(fields or {})
            jobs.append(Job(queue, _text(eid), run_id, deliveries, True, id_time(eid)))
        if any(eid is None for eid, _ in entries):
            dropped += await self._ack_vanished(queue, cursor, next_cursor, {j.entry_id for j in jobs}, held)
        return ClaimBatch(jobs, next_cursor, dropped, kept)

    async def inherited(self, queue: str, count: int, held: Collection[str]) -> list[Job]:
        """Entries still pending under this consumer name from an earlier process that died.

        Called once at start, before this process holds anything: a runner restarted with the
        same ``TT_RUNNER_ID`` (as ``tickertape up`` and a StatefulSet do) resumes its runs at once
        instead of waiting a lease for another runner to take them over.
        """
        rows = await self.redis.xpending_range(
            queue, self.group, min="-", max="+", count=count, consumername=self.consumer
        )
        ids = [_text(row["message_id"]) for row in rows if _text(row["message_id"]) not in held]
        if not ids:
            return []
        claimed: Any = await self.redis.xclaim(queue, self.group, self.consumer, 0, list[Any](ids))
        jobs = []
        for eid, fields in claimed:
            if eid is None or fields is None:
                continue
            deliveries = await self.deliveries(queue, _text(eid))
            jobs.append(Job(queue, _text(eid), entry_run_id(fields), deliveries, True, id_time(eid)))
        return jobs

    async def _keep(self, queue: str, entry_id: str, deliveries: int) -> None:
        """Undo the delivery XAUTOCLAIM counted on an entry we were executing all along."""
        await self.redis.xclaim(
            queue, self.group, self.consumer, 0, [entry_id], retrycount=max(deliveries - 1, 1), justid=True
        )

    async def _ack_vanished(
        self, queue: str, start: str, end: str, claimed: set[str], held: Iterable[str]
    ) -> int:
        """6.2: entries deleted while pending are now in our PEL under no data: ack them."""
        skip = claimed | set(held)
        upper = "+" if end in ("0-0", "0") else f"({end}"
        pending = await self.redis.xpending_range(
            queue, self.group, min=start if start != "0-0" else "-", max=upper, count=1000,
            consumername=self.consumer,
        )  # fmt: skip
        vanished = []
        for row in pending:
            eid = _text(row["message_id"])
            if eid not in skip and not await self.redis.xrange(queue, min=eid, max=eid):
                vanished.append(eid)
        if vanished:
            await self.redis.xack(queue, self.group, *vanished)
            logger.warning("acked %d queue entries deleted while pending", len(vanished))
        return len(vanished)

    async def deliveries(self, queue: str, entry_id: str) -> int:
        rows = await self.redis.xpending_range(queue, self.group, min=entry_id, max=entry_id, count=1)
        return int(rows[0]["times_delivered"]) if rows else 1

    async def renew(self, held: Mapping[str, Sequence[str]]) -> dict[str, set[str]]:
        """Reset the idle time of the entries (by queue) we still own, all queues in one round
        trip; returns per queue those kept (the others were lost to another runner)."""
        queues = [queue for queue, ids in held.items() if ids]
        calls = [
            ScriptCall(
                self._renew.sha, _RENEW, [q], [self.group, self.consumer, len(held[q]) + _PEL_SLACK, *held[q]]
            )
            for q in queues
        ]
        replies = await evalsha_pipelined(self.renewer, calls) if calls else []
        kept: dict[str, set[str]] = {}
        for queue, reply in zip(queues, replies, strict=True):
            if isinstance(reply, Exception):
                raise reply
            kept[queue] = {_text(x) for x in reply or ()}
        return kept

    async def ack(self, queue: str, entry_id: str) -> None:
        await self.redis.xack(queue, self.group, entry_id)

    async def release(self, job: Job) -> None:
        """Make the entry claimable now, without counting this delivery as a failed attempt."""
        await self.redis.xclaim(
            job.queue, self.group, self.consumer, 0, [job.entry_id],
            idle=self.lease_ms + 1, retrycount=max(job.deliveries - 1, 0), justid=True,
        )  # fmt: skip

    async def retry_after(self, job: Job, delay_s: float) -> None:
        """Make the entry claimable once ``delay_s`` passed (at most the lease)."""
        idle = max(self.lease_ms - int(delay_s * 1000), 0)
        await self.redis.xclaim(
            job.queue, self.group, self.consumer, 0, [job.entry_id], idle=idle, justid=True
        )

    async def deadletter(self, job: Job, reason: str, detail: str) -> None:
        """Move the entry to the dead-letter stream with why, and ack it, in one step."""
        fields: dict[Any, Any] = {
            "queue": job.queue, "id": job.entry_id, "r": job.run_id, "reason": reason,
            "detail": detail[:2000], "deliveries": job.deliveries, "runner": self.consumer,
            "at": f"{time.time():.3f}",
        }  # fmt: skip
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xadd(self.keys.deadletter, fields, maxlen=100_000, approximate=True)
            pipe.xack(job.queue, self.group, job.entry_id)
            await pipe.execute()


def id_time(entry_id: bytes | str) -> float:
    """The Unix time encoded in a stream ID."""
    return int(_text(entry_id).split("-", 1)[0]) / 1000


def _pairs(flat: Sequence[bytes]) -> dict[bytes, bytes]:
    it = iter(flat)
    return dict(zip(it, it, strict=True))


def _text(value: bytes | str | int) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
