"""The Lua of the append primitive (``shared.store``): the rules of a run, kept inside Redis.

What each script guarantees is written in ``shared.store``'s module docstring; ``make mutate``
(``bench/mutate.py``) breaks these texts one named rule at a time and checks a test notices.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError, ResponseError

APPEND = """
local phase = redis.call('HGET', KEYS[3], 'phase')
if not phase then return {'refused', 'unknown'} end
local seen = 'a:' .. string.sub(redis.sha1hex(ARGV[1]), 1, 16)
local before = redis.call('HGET', KEYS[3], seen)
if before then return {'ok', before} end
if ARGV[3] == 'after' or ARGV[3] == 'note' then
  local owner = redis.call('HGET', KEYS[3], 'user')
  if ARGV[3] == 'note' and owner ~= ARGV[6] then return {'refused', 'unknown'} end
  if ARGV[3] == 'after' and phase ~= 'ended' then return {'refused', phase} end
  local after = redis.call('XADD', KEYS[1], '*', 'e', ARGV[1])
  redis.call('XADD', KEYS[2], '*', 'e', ARGV[1], 'r', ARGV[2], 's', after)
  redis.call('HSET', KEYS[3], seen, after)
  return {'ok', after}
end
if phase == 'ended' then return {'refused', 'ended'} end
local t, fence = ARGV[3], ARGV[5]
if t == 'cancel' then
  if redis.call('HGET', KEYS[3], 'user') ~= ARGV[6] then return {'refused', 'unknown'} end
elseif t == 'start' then
  if phase == 'running' and redis.call('HGET', KEYS[3], 'fence') == fence then
    return {'refused', 'fenced'}
  end
elseif t ~= 'abandon' then
  if phase ~= 'running' then return {'refused', phase} end
  if redis.call('HGET', KEYS[3], 'fence') ~= fence then return {'refused', 'fenced'} end
end
local id = redis.call('XADD', KEYS[1], '*', 'e', ARGV[1])
redis.call('XADD', KEYS[2], '*', 'e', ARGV[1], 'r', ARGV[2], 's', id)
redis.call('HSET', KEYS[3], seen, id)
if t == 'cancel' and phase == 'running' and KEYS[5] then
  redis.call('XADD', KEYS[5], 'MAXLEN', '~', 10000, '*', 'e', ARGV[1], 'r', ARGV[2], 's', id)
end
if t == 'terminal' or t == 'abandon' or (t == 'cancel' and phase == 'queued') then
  redis.call('HSET', KEYS[3], 'phase', 'ended')
  redis.call('SREM', KEYS[4], ARGV[2])
  redis.call('EXPIRE', KEYS[1], ARGV[4])
  redis.call('EXPIRE', KEYS[3], ARGV[4])
  local joinkey = redis.call('HGET', KEYS[3], 'join')
  if joinkey and redis.call('GET', joinkey) == ARGV[2] then redis.call('DEL', joinkey) end
elseif t == 'start' then
  redis.call('HSET', KEYS[3], 'phase', 'running', 'fence', fence)
elseif t == 'retry' then
  redis.call('HSET', KEYS[3], 'phase', 'queued', 'fence', '')
end
return {'ok', id}
"""

APPEND_ALL = (
    "local function append_one(KEYS, ARGV)\n"
    + APPEND
    + """end
local out, a = {}, 1
for r = 0, #KEYS / 5 - 1 do
  local keys = {KEYS[5 * r + 1], KEYS[5 * r + 2], KEYS[5 * r + 3], KEYS[5 * r + 4]}
  local group, entry, run, ttl = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
  local fence, n = ARGV[a + 4], tonumber(ARGV[a + 5])
  a = a + 6
  local ids, refused = {}, nil
  for i = 1, n do
    if not refused then
      local res = append_one(keys, {ARGV[a], run, ARGV[a + 1], ttl, fence, ARGV[a + 2]})
      if res[1] == 'ok' then ids[#ids + 1] = res[2] else refused = res[2] end
    end
    a = a + 3
  end
  if entry ~= '' and refused ~= 'fenced' then redis.call('XACK', KEYS[5 * r + 5], group, entry) end
  out[#out + 1] = {refused and 'refused' or 'ok', refused or '', ids}
end
return out
"""
)
"""Several runs' events, each run's in order under exactly the rules of ``APPEND`` (its text is
the body of ``append_one``, KEYS and ARGV its parameters); a run's appends stop at its first
refused event. Per run 5 KEYS (run stream, log, meta, active set, queue) and ARGV (group, queue
entry ID or '', run id, ttl, fence, event count, then per event: encoded, transition, user). The
queue entry is acked in the same step unless a refusal says the run is another runner's
(``fenced``): a terminal event and its ack can no longer be separated by a crash."""

SUBMIT = """
local before = redis.call('HGET', KEYS[3], 'requested')
if before then return {'ok', before} end
if ARGV[5] ~= '' then
  local prev = redis.call('GET', KEYS[6])
  if prev then return {'duplicate', prev} end
end
if ARGV[8] == '1' then
  local joined = redis.call('GET', KEYS[7])
  local joined_phase = joined and redis.call('HGET', ARGV[7] .. joined, 'phase')
  if joined_phase and joined_phase ~= 'ended' then
    if ARGV[5] ~= '' then
      redis.call('SET', KEYS[6], joined .. string.sub(ARGV[5], #ARGV[2] + 1), 'EX', ARGV[6])
    end
    return {'joined', joined}
  end
end
local cap = tonumber(ARGV[4])
if cap > 0 then
  for _, member in ipairs(redis.call('SMEMBERS', KEYS[4])) do
    local phase = redis.call('HGET', ARGV[7] .. member, 'phase')
    if (not phase) or phase == 'ended' then redis.call('SREM', KEYS[4], member) end
  end
  if redis.call('SCARD', KEYS[4]) >= cap then return {'capped', tostring(cap)} end
end
redis.call('HSET', KEYS[3], 'phase', 'queued', 'user', ARGV[3], 'fence', '')
redis.call('SADD', KEYS[4], ARGV[2])
local id = redis.call('XADD', KEYS[1], '*', 'e', ARGV[1])
redis.call('XADD', KEYS[2], '*', 'e', ARGV[1], 'r', ARGV[2], 's', id)
for i = 11, #ARGV do
  local carried = redis.call('XADD', KEYS[1], '*', 'e', ARGV[i])
  redis.call('XADD', KEYS[2], '*', 'e', ARGV[i], 'r', ARGV[2], 's', carried)
end
redis.call('XADD', KEYS[5], '*', 'r', ARGV[2])
redis.call('HSET', KEYS[3], 'requested', id)
if ARGV[5] ~= '' then redis.call('SET', KEYS[6], ARGV[5], 'EX', ARGV[6]) end
if ARGV[8] ~= '' then
  redis.call('SET', KEYS[7], ARGV[2], 'EX', ARGV[10])
  redis.call('HSET', KEYS[3], 'join', KEYS[7])
end
if ARGV[9] ~= '' then redis.call('SET', KEYS[8], ARGV[9], 'EX', ARGV[10]) end
return {'ok', id}
"""
"""KEYS: run stream, log, meta, active set, queue, idempotency key, join key, webhook secret key.
ARGV: event, run id, user, cap, idempotency value, its TTL, meta prefix, join ('1' join a live run
with this fingerprint, '0' only record this run under it, '' neither), webhook secret (''), run TTL,
then events appended right after the request (a fork's carried StepCompleted events).
A join answers before the cap: joining adds no active run."""


END_LOST = """
if redis.call('EXISTS', KEYS[3]) == 1 then return {'refused', 'known'} end
local first, id = '', ''
for i = 5, #ARGV do
  id = redis.call('XADD', KEYS[1], '*', 'e', ARGV[i])
  redis.call('XADD', KEYS[2], '*', 'e', ARGV[i], 'r', ARGV[1], 's', id)
  if first == '' then first = id end
end
redis.call('HSET', KEYS[3], 'phase', 'ended', 'user', ARGV[2], 'fence', '')
if ARGV[4] == '1' then redis.call('HSET', KEYS[3], 'requested', first) end
redis.call('SREM', KEYS[4], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[3], ARGV[3])
return {'ok', id}
"""
"""End a run Redis no longer knows (its meta hash is gone: lost in a failover): its events (the
rebuilt request, if any, then the terminal event) go to a new run stream and the global log, and
an ``ended`` meta hash is written, all in one step; refused when the meta hash exists."""


OUTCOMES_CLAIM = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, run in ipairs(due) do redis.call('ZADD', KEYS[1], 'XX', ARGV[2], run) end
return due
"""
"""KEYS: outcomes due. ARGV: now (ms), lease end (ms), how many. The runs whose outcome is due,
each re-scored to the lease's end in the same step: no other sweeper sees it due until the lease
ends (then, its sweeper having died, another measures it)."""

OUTCOMES_SETTLE = """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if (not score) or tonumber(score) ~= tonumber(ARGV[2]) then return 0 end
if ARGV[3] == 'retry' then
  redis.call('ZADD', KEYS[1], ARGV[4], ARGV[1])
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[5])
  return 1
end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
if ARGV[3] == 'record' then redis.call('XADD', KEYS[3], '*', 'e', ARGV[4], 'r', ARGV[1]) end
return 1
"""
"""KEYS: outcomes due, outcomes pending, log. ARGV: run id, the claim's lease end, action
(``record`` with the encoded event, ``retry`` with the next due ms and the pending entry, or
``drop``). Only while the run's score is still the claim's lease end (the claim is this sweeper's):
1, else 0 and nothing changes. A recorded outcome leaves the schedule in the step that appends
it, so a run's outcome is appended once whatever the sweepers do."""


@dataclass(frozen=True, slots=True)
class ScriptCall:
    """One EVALSHA: the script's SHA1 and source (loaded again if Redis lost it), keys, args."""

    sha: str
    source: str
    keys: Sequence[str]
    args: Sequence[bytes | str | int]


async def evalsha_pipelined(redis: Redis, calls: Sequence[ScriptCall]) -> list[Any]:
    """Send the calls in one round trip (one pipeline; a single call without one). A script
    Redis no longer has (restart, SCRIPT FLUSH) is loaded and the calls it refused, which did
    not run, are sent again. Replies in order; an error reply is returned as its exception."""
    replies: list[Any] = [None] * len(calls)
    todo = list(range(len(calls)))
    for _ in range(2):
        if len(todo) == 1:
            call = calls[todo[0]]
            try:
                results: list[Any] = [await redis.evalsha(call.sha, len(call.keys), *call.keys, *call.args)]
            except ResponseError as exc:
                results = [exc]
        else:
            async with redis.pipeline(transaction=False) as pipe:
                for i in todo:
                    call = calls[i]
                    pipe.evalsha(call.sha, len(call.keys), *call.keys, *call.args)
                results = await pipe.execute(raise_on_error=False)
        for i, result in zip(todo, results, strict=True):
            replies[i] = result
        missing = [i for i, r in zip(todo, results, strict=True) if isinstance(r, NoScriptError)]
        if not missing:
            break
        for source in {calls[i].source for i in missing}:
            await redis.script_load(source)
        todo = missing
    return replies
