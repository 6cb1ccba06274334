"""Lua scripts: each runs atomically on the Redis server, so N processes never interleave."""

from __future__ import annotations

import redis
from redis.commands.core import Script

__all__ = ["ACK", "ADOPT", "CLAIM", "COMMIT", "COMMIT_BATCH", "PUBLISH", "RENEW", "script"]


def script(client: redis.Redis, text: str) -> Script:
    """The script, run by its SHA1 on ``client`` (and loaded again on NOSCRIPT, after a
    Redis restart); call it with ``keys=``, ``args=`` and ``client=``."""
    return _SCRIPTS[text]


# What a dedup key or a claim holds: "{expires}|{nonce}" (the nonce of the commit that wrote
# it). The scripts below that read one start with these.
_VALUES = """
local function ours(value, nonce)
  local mark = '|' .. nonce
  return string.sub(value, -string.len(mark)) == mark
end
local function live(value, now)
  local sep = string.find(value, '|', 1, true)
  local expires = tonumber(sep and string.sub(value, 1, sep - 1) or value)
  return expires == nil or expires > now
end
"""

#: Commit a record, compare-and-set on the job's state.
#: KEYS: job state, dedup key, inbox hash, inbox order, sequence, active set, owners set.
#: ARGV: has_job, expected state ('' = absent), new state ('' = unchanged), active ('1'/'0'),
#:       job id, event key ('' = no event), event JSON, now, dedup value, EX seconds, nonce,
#:       owner (of the inbox: named in the owners set with every event it takes, so that a
#:       Redis that lost the set, restarted empty, still has the inbox adopted).
#: Returns 'ok' (also when this very commit, same nonce, ran before: a retry after a lost
#: reply), 'duplicate', or 'conflict' (the state changed since it was read: decide again).
COMMIT = (
    _VALUES
    + """
local seen = false
if ARGV[6] ~= '' then
  seen = redis.call('GET', KEYS[2])
  if seen and ours(seen, ARGV[11]) then return 'ok' end
end
if ARGV[1] == '1' then
  local current = redis.call('GET', KEYS[1])
  if (current or '') ~= ARGV[2] then return 'conflict' end
end
if seen and live(seen, tonumber(ARGV[8])) then return 'duplicate' end
-- The writes a key of the wrong type refuses come first, the dedup key last: a refused
-- write ends the script, and a dedup key written before it would make the sender's retry a
-- duplicate of an event that no inbox holds.
if ARGV[3] ~= '' then
  if ARGV[4] == '1' then
    redis.call('SADD', KEYS[6], ARGV[5])
  else
    redis.call('SREM', KEYS[6], ARGV[5])
  end
end
if ARGV[6] ~= '' then
  local seq = redis.call('INCR', KEYS[5])
  redis.call('HSET', KEYS[3], ARGV[6], ARGV[7])
  redis.call('ZADD', KEYS[4], seq, ARGV[6])
  redis.call('SADD', KEYS[7], ARGV[12])
  redis.call('SET', KEYS[2], ARGV[9], 'EX', ARGV[10])
end
if ARGV[3] ~= '' then
  redis.call('SET', KEYS[1], ARGV[3])
end
return 'ok'
"""
)

#: Commit a batch of records, job by job, each job compare-and-set on its state: a job whose
#: state changed since it was read, or one of whose event keys is held (by another process,
#: or by an earlier job of this batch), is left as it is and reported, to be decided again.
#: KEYS: inbox hash, inbox order, sequence, active set, owners set, then the job and dedup
#: keys the plan names by index. ARGV[1]: the plan as JSON, {now, ex (EX seconds), nonce,
#: owner (of the inbox: named in the owners set when an event is taken, as COMMIT does),
#: jobs: [{k (index
#: of the job key, 0 = a workspace event), exp (expected state, '' = absent), new (state to
#: save, '' = unchanged), act ('1' = active), id, ev: [[dedup key index, event key, event
#: JSON, dedup value], ...]}], claim: false or [claim key index, value, EX seconds]}: a claim
#: taken, as CLAIM takes it, only when every job of the call commits. Returns, as JSON, per
#: job ["ok"] (also when this very commit, same nonce, ran before: a retry after a lost
#: reply), ["conflict", current state] or ["seen", current state, held event key, ...].
COMMIT_BATCH = (
    _VALUES
    + """
local plan = cjson.decode(ARGV[1])
local now = tonumber(plan.now)
local claimed = {}
local registered = false
local out = {}
for i, job in ipairs(plan.jobs) do
  local mine = false
  for _, ev in ipairs(job.ev) do
    local held = redis.call('GET', KEYS[ev[1]])
    if held and ours(held, plan.nonce) then mine = true end
  end
  local current = ''
  local status = 'ok'
  local held_keys = {}
  if not mine then
    if job.k > 0 then
      current = redis.call('GET', KEYS[job.k]) or ''
      if current ~= job.exp then status = 'conflict' end
    end
    if status == 'ok' then
      for _, ev in ipairs(job.ev) do
        if claimed[ev[2]] then
          held_keys[#held_keys + 1] = ev[2]
        else
          local held = redis.call('GET', KEYS[ev[1]])
          if held and live(held, now) then held_keys[#held_keys + 1] = ev[2] end
        end
      end
      if #held_keys > 0 then status = 'seen' end
    end
    if status == 'ok' then
      -- The writes a key of the wrong type refuses first, each dedup key after its inbox
      -- entry, as in COMMIT.
      if job.new ~= '' then
        if job.act == '1' then
          redis.call('SADD', KEYS[4], job.id)
        else
          redis.call('SREM', KEYS[4], job.id)
        end
      end
      for _, ev in ipairs(job.ev) do
        local seq = redis.call('INCR', KEYS[3])
        redis.call('HSET', KEYS[1], ev[2], ev[3])
        redis.call('ZADD', KEYS[2], seq, ev[2])
        if not registered then
          redis.call('SADD', KEYS[5], plan.owner)
          registered = true
        end
        redis.call('SET', KEYS[ev[1]], ev[4], 'EX', plan.ex)
        claimed[ev[2]] = true
      end
      if job.new ~= '' then
        redis.call('SET', KEYS[job.k], job.new)
      end
    end
  end
  if status == 'ok' then
    out[i] = {'ok'}
  else
    local answer = {status, current}
    for _, key in ipairs(held_keys) do answer[#answer + 1] = key end
    out[i] = answer
  end
end
if plan.claim then
  local every = true
  for _, answer in ipairs(out) do
    if answer[1] ~= 'ok' then every = false end
  end
  local held = every and redis.call('GET', KEYS[plan.claim[1]])
  if held and not ours(held, plan.nonce) and live(held, now) then every = false end
  if every then
    redis.call('SET', KEYS[plan.claim[1]], plan.claim[2], 'EX', plan.claim[3])
  end
end
return cjson.encode(out)
"""
)

#: Remove dispatched events from an inbox. A script, not MULTI/EXEC: a Redis at its
#: maxmemory refuses every command queued in a transaction, even one that frees memory, but
#: lets a script that only deletes run. KEYS: inbox hash, inbox order. ARGV: the event keys.
ACK = """
for i = 1, #ARGV do
  redis.call('ZREM', KEYS[2], ARGV[i])
  redis.call('HDEL', KEYS[1], ARGV[i])
end
return 1
"""

#: Move a dead owner's inbox into ours, keeping the record order; only if its lease is gone.
#: KEYS: their lease, their inbox, their order, our inbox, our order, owners set.
#: ARGV: their owner name, our owner name. Returns how many events moved, or -1 if the owner
#: is alive.
ADOPT = """
if redis.call('EXISTS', KEYS[1]) == 1 then return -1 end
local entries = redis.call('ZRANGE', KEYS[3], 0, -1, 'WITHSCORES')
local moved = 0
for i = 1, #entries, 2 do
  local value = redis.call('HGET', KEYS[2], entries[i])
  if value then
    redis.call('HSET', KEYS[4], entries[i], value)
    redis.call('ZADD', KEYS[5], entries[i + 1], entries[i])
    moved = moved + 1
  end
end
redis.call('DEL', KEYS[2], KEYS[3])
redis.call('SREM', KEYS[6], ARGV[1])
if moved > 0 then redis.call('SADD', KEYS[6], ARGV[2]) end
return moved
"""

#: Renew this process's lease, unless another process holds it, and name the owner in the
#: owners set. KEYS: the lease, the owners set. ARGV: our token, PX milliseconds, the owner.
#: Returns 1 if renewed, 2 if taken again (it had run out, or Redis lost it), 0 if another
#: process holds it (its token is there: it started under this owner name meanwhile).
#: A lease held is renewed with PEXPIRE, not SET: a Redis at its maxmemory refuses a script's
#: first write that may take memory (SET), but not one that cannot (PEXPIRE); a lease that
#: runs out while Redis is full leaves a live process's inbox to the next receiver to start.
RENEW = """
local held = redis.call('GET', KEYS[1])
if held and held ~= ARGV[1] then return 0 end
if held then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
else
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
redis.call('SADD', KEYS[2], ARGV[3])
if held then return 1 end
return 2
"""

#: Take a claim unless a live one holds it. KEYS: the claim. ARGV: now (store clock), the
#: value ("{expires}|{nonce}"), EX seconds, nonce. Returns 1 if taken (also when this very
#: claim, same nonce, ran before: a retry after a lost reply), 0 if held.
CLAIM = (
    _VALUES
    + """
local held = redis.call('GET', KEYS[1])
if held then
  if ours(held, ARGV[4]) then return 1 end
  if live(held, tonumber(ARGV[1])) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
return 1
"""
)

#: Append an event to the relay stream once per key, however often it is published.
#: KEYS: the published-marker key, the stream. ARGV: marker TTL seconds, MAXLEN (0 = none),
#: event key, event JSON. Returns the entry id, or false when it was published before.
PUBLISH = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then return false end
if tonumber(ARGV[2]) > 0 then
  return redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'key', ARGV[3],
                    'event', ARGV[4])
end
return redis.call('XADD', KEYS[2], '*', 'key', ARGV[3], 'event', ARGV[4])
"""

# Script objects only hash the text here; every call names the client that runs it.
_SCRIPTS = {
    text: Script(redis.Redis(), text)
    for text in (ACK, ADOPT, CLAIM, COMMIT, COMMIT_BATCH, PUBLISH, RENEW)
}
