"""The Lua scripts of :class:`~chatcompat.sessions.redis_store.RedisStore`.

A script runs atomically in Redis, so each one is a transaction of its own. Every
write script reads first and writes last (nothing in them can fail after the first
write on well-typed keys), because Redis does not roll back a script that raises
half-way. Times come from the Redis server's clock (``TIME``, in microseconds), so
the hosts of a gateway never disagree about order or expiry because of clock skew.
Numbers go back to Redis through ``string.format('%.0f')``: Lua's default number
formatting keeps only 14 digits. The scripts that refresh or delete a session's
finished replies or responses reach those records through the set that lists them,
and the response scripts reach a session's keys through the by-id entry, not through
``KEYS``: fine on one Redis, one more thing a Redis Cluster mode would have to change.
"""

from __future__ import annotations

# Shared by every script that needs the clock. replicate_commands() makes TIME
# followed by writes legal on Redis < 5 (a no-op since).
_PRELUDE = """
if redis.replicate_commands then redis.replicate_commands() end
local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local function fmt(n) return string.format('%.0f', n) end
"""

# Deletes the finished replies listed in the set KEYS[5] and the stored responses of
# the session (KEYS[8]) with their by-id entries (KEYS[10]) listed in KEYS[9] (see
# redis_store's data model). ARGV[1] is the session key: an entry naming another
# session is left alone.
_DROP_REPLIES = """
local function drop_replies()
  for _, record in ipairs(redis.call('SMEMBERS', KEYS[5])) do redis.call('DEL', record) end
  for _, id in ipairs(redis.call('SMEMBERS', KEYS[9])) do
    if redis.call('HGET', KEYS[10], id) == ARGV[1] then redis.call('HDEL', KEYS[10], id) end
  end
  redis.call('DEL', KEYS[8], KEYS[9])
end
"""

# KEYS: meta, msgs, turns, turn-ids, replies, by-updated, by-expiry, responses,
#       response-ids, responses:by-id[, reply record]
# ARGV: session key, agent id, sticky (1/0), ttl ms, turn id, fingerprint, reply,
#       response id ("" for none), response fields (JSON), message 1, message 2, ...
# Returns 0 and stores nothing when the session already has the turn id (a retried
# call: reply lost, command resent) or the record already holds a finished reply;
# fails and stores nothing when the response id is taken.
APPEND = (
    _PRELUDE
    + _DROP_REPLIES
    + """
if redis.call('SISMEMBER', KEYS[4], ARGV[5]) == 1 then return 0 end
local keyed = #KEYS == 11
if keyed and redis.call('HEXISTS', KEYS[11], 'reply') == 1 then return 0 end
local response = ARGV[8] ~= ''
if response and redis.call('HEXISTS', KEYS[10], ARGV[8]) == 1 then
  return redis.error_reply('the response id is taken')
end
local now = now_us()
local ttl = tonumber(ARGV[4])
local expires = now + ttl * 1000
if redis.call('EXISTS', KEYS[1]) == 0 then
  -- new, or expired: an expired session starts afresh (leftovers go too)
  drop_replies()
  redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[5])
  redis.call('HSET', KEYS[1], 'created', fmt(now), 'turns', 0)
end
local count = 0
-- in slices: unpack() of thousands of values would overflow Lua's C stack
for first = 10, #ARGV, 1000 do
  count = redis.call('RPUSH', KEYS[2], unpack(ARGV, first, math.min(first + 999, #ARGV)))
end
redis.call('RPUSH', KEYS[3], fmt(now) .. ':' .. count)
redis.call('SADD', KEYS[4], ARGV[5])
redis.call('HSET', KEYS[1], 'agent_id', ARGV[2], 'sticky', ARGV[3], 'updated', fmt(now),
  'expires', fmt(expires), 'messages', count)
local turn = redis.call('HINCRBY', KEYS[1], 'turns', 1)
if keyed then
  -- replaces the claim, whoever holds it
  redis.call('DEL', KEYS[11])
  redis.call('HSET', KEYS[11], 'fingerprint', ARGV[6], 'session', ARGV[1], 'reply', ARGV[7])
  redis.call('SADD', KEYS[5], KEYS[11])
end
if response then
  -- "<turn>:<position>:<created µs>:<fields>"; latest while turn is meta's turns
  redis.call('HSET', KEYS[8], ARGV[8],
    turn .. ':' .. count .. ':' .. fmt(now) .. ':' .. ARGV[9])
  redis.call('SADD', KEYS[9], ARGV[8])
  redis.call('HSET', KEYS[10], ARGV[8], ARGV[1])
end
-- The responses hash expires with the session (one command, however many it holds);
-- response-ids and the by-id entries have no expiry: they go when the session is
-- deleted, pruned or starts afresh.
for _, i in ipairs({1, 2, 3, 4, 8}) do redis.call('PEXPIRE', KEYS[i], ttl) end
-- The session's replies live as long as it does: one PEXPIRE each, every turn.
for _, record in ipairs(redis.call('SMEMBERS', KEYS[5])) do
  redis.call('PEXPIRE', record, ttl)
end
redis.call('PEXPIRE', KEYS[5], ttl)
redis.call('ZADD', KEYS[6], fmt(now), ARGV[1])
redis.call('ZADD', KEYS[7], fmt(expires), ARGV[1])
return 1
"""
)

# KEYS: meta, msgs, turns, turn-ids, replies, by-updated, by-expiry, responses,
# response-ids, responses:by-id; ARGV: session key. Returns 1 when the session was live.
DELETE = (
    _DROP_REPLIES
    + """
local live = redis.call('EXISTS', KEYS[1])
drop_replies()
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5])
redis.call('ZREM', KEYS[6], ARGV[1])
redis.call('ZREM', KEYS[7], ARGV[1])
return live
"""
)

# Same keys: forget the index entries of a session that Redis has expired (and any
# leftover of it); leaves a live session alone. Returns 1 when it pruned.
PRUNE = (
    _DROP_REPLIES
    + """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
drop_replies()
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[5])
redis.call('ZREM', KEYS[6], ARGV[1])
redis.call('ZREM', KEYS[7], ARGV[1])
return 1
"""
)

# KEYS: responses:by-id; ARGV: response id, key prefix. The by-id entry names the
# session; its keys are built here (as redis_store._session_keys does). Returns {} when
# the response is unknown, deleted or expired with its session, else {session key,
# "<turn>:<position>:<created µs>:<fields>", the session's turn count}.
GET_RESPONSE = """
local session = redis.call('HGET', KEYS[1], ARGV[1])
if not session then return {} end
local base = ARGV[2] .. '{' .. session .. '}:'
local record = redis.call('HGET', base .. 'responses', ARGV[1])
local turns = redis.call('HGET', base .. 'meta', 'turns')
if not record or not turns then return {} end
return {session, record, turns}
"""

# KEYS: responses:by-id; ARGV: response id, key prefix. Deletes the response (its turn
# stays); returns 1 when it was live.
DELETE_RESPONSE = """
local session = redis.call('HGET', KEYS[1], ARGV[1])
if not session then return 0 end
local base = ARGV[2] .. '{' .. session .. '}:'
local live = redis.call('HDEL', base .. 'responses', ARGV[1]) == 1
  and redis.call('EXISTS', base .. 'meta') == 1
redis.call('SREM', base .. 'response-ids', ARGV[1])
redis.call('HDEL', KEYS[1], ARGV[1])
if live then return 1 end
return 0
"""

# KEYS: idempotency record; ARGV: owner, fingerprint, ttl ms. Takes a free scope or
# refreshes our own claim: returns {}. Otherwise returns what the record holds:
# {fingerprint, session, reply}, session and reply nil for another owner's claim.
CLAIM = """
local held = redis.call('HMGET', KEYS[1], 'fingerprint', 'owner', 'session', 'reply')
if held[1] == false or (held[4] == false and held[2] == ARGV[1]) then
  redis.call('HSET', KEYS[1], 'fingerprint', ARGV[2], 'owner', ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return {}
end
return {held[1], held[3], held[4]}
"""

# KEYS: idempotency record; ARGV: owner. Deletes the record only while it is the
# owner's claim (a finished reply has no owner).
RELEASE_CLAIM = """
if redis.call('HGET', KEYS[1], 'owner') == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: lock; ARGV: owner, ttl ms. Takes a free lock or refreshes our own.
ACQUIRE_LOCK = """
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""

# KEYS: lock; ARGV: owner. Deletes the lock only while the owner holds it.
RELEASE_LOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: failures (sorted set of times), lockout; ARGV: window ms, max attempts,
# lockout ms, failure id (a retried call counts its failure once).
# Returns 1 when this failure started a lockout.
AUTH_FAILURE = (
    _PRELUDE
    + """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
local now = now_us()
local window = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', fmt(now - window * 1000))
redis.call('ZADD', KEYS[1], fmt(now), ARGV[4])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  redis.call('DEL', KEYS[1])
  redis.call('SET', KEYS[2], '1', 'PX', ARGV[3])
  return 1
end
redis.call('PEXPIRE', KEYS[1], window)
return 0
"""
)

# -- the limits of named keys ---------------------------------------------------------

# Used by the window scripts. A token entry is "<id>:<amount>"; KEYS[3] holds the sum
# of the entries of KEYS[2], kept in step, so a request reads one number instead of
# summing its whole window.
_WINDOWS = """
local function amount(member) return tonumber(string.match(member, ':(%d+)$')) end
local function expire_tokens(tokens, sum, since)
  local gone = redis.call('ZRANGEBYSCORE', tokens, '-inf', since)
  if #gone == 0 then return end
  local total = 0
  for _, member in ipairs(gone) do total = total + amount(member) end
  redis.call('ZREMRANGEBYSCORE', tokens, '-inf', since)
  if redis.call('ZCARD', tokens) == 0 then redis.call('DEL', sum)
  else redis.call('DECRBY', sum, total) end
end
"""

# KEYS: requests (sorted set: request id -> time), tokens (sorted set: "id:amount" ->
# time), tokens sum; ARGV: window ms, requests limit, tokens limit (0: none), request
# id. Admits (counts) the request unless a window has reached its limit. Returns
# {admitted 1/0, requests in the window, µs until it admits again when full (else
# until its oldest leaves), tokens in the window, the same for tokens}.
ADMIT = (
    _PRELUDE
    + _WINDOWS
    + """
local now = now_us()
local window = tonumber(ARGV[1]) * 1000
local rlimit, tlimit = tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', fmt(now - window))
expire_tokens(KEYS[2], KEYS[3], fmt(now - window))
local count = redis.call('ZCARD', KEYS[1])
local tokens = tonumber(redis.call('GET', KEYS[3]) or '0')
local admitted = 1
if redis.call('ZSCORE', KEYS[1], ARGV[4]) then
  admitted = 1  -- a resent call whose first run landed: admitted then, counted once
elseif (rlimit > 0 and count >= rlimit) or (tlimit > 0 and tokens >= tlimit) then
  admitted = 0
elseif redis.call('ZADD', KEYS[1], fmt(now), ARGV[4]) == 1 then
  count = count + 1
end
if count > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
local rreset = 0
if count > 0 then
  -- full: room comes back when the (count - limit + 1)th oldest leaves
  local nth = 0
  if rlimit > 0 and count >= rlimit then nth = count - rlimit end
  local at = redis.call('ZRANGE', KEYS[1], nth, nth, 'WITHSCORES')
  rreset = math.max(0, tonumber(at[2]) + window - now)
end
local treset = 0
if tokens > 0 then
  if tlimit > 0 and tokens >= tlimit then
    -- full (rare): walk the entries, oldest first, until the rest is under the limit
    local entries = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
    local left = tokens
    for i = 1, #entries, 2 do
      left = left - amount(entries[i])
      if left < tlimit then treset = tonumber(entries[i + 1]) + window - now break end
    end
  else
    local oldest = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
    treset = tonumber(oldest[2]) + window - now
  end
  treset = math.max(0, treset)
end
return {admitted, count, fmt(rreset), fmt(tokens), fmt(treset)}
"""
)

# KEYS: tokens, tokens sum; ARGV: window ms, entry id, amount.
RECORD_TOKENS = (
    _PRELUDE
    + _WINDOWS
    + """
local now = now_us()
expire_tokens(KEYS[1], KEYS[2], fmt(now - tonumber(ARGV[1]) * 1000))
if redis.call('ZADD', KEYS[1], 'NX', fmt(now), ARGV[2] .. ':' .. ARGV[3]) == 1 then
  redis.call('INCRBY', KEYS[2], ARGV[3])
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[1])
return 1
"""
)

# KEYS: slots (sorted set: owner -> expiry); ARGV: owner, limit, ttl ms. Takes a free
# slot or refreshes the owner's own; returns 0 when the key's live slots are full.
ACQUIRE_SLOT = (
    _PRELUDE
    + """
local now = now_us()
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', fmt(now))
if redis.call('ZSCORE', KEYS[1], ARGV[1]) == false
    and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], fmt(now + tonumber(ARGV[3]) * 1000), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""
)
