"""The Lua scripts of :class:`~chatcompat.sessions.redis_store.RedisStore`.

A script runs atomically in Redis, so each one is a transaction of its own. Every
write script reads first and writes last (nothing in them can fail after the first
write on well-typed keys), because Redis does not roll back a script that raises
half-way. Times come from the Redis server's clock (``TIME``, in microseconds), so
the hosts of a gateway never disagree about order or expiry because of clock skew.
Numbers go back to Redis through ``string.format('%.0f')``: Lua's default number
formatting keeps only 14 digits.
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

# KEYS: meta, msgs, turns, by-updated, by-expiry
# ARGV: session key, agent id, sticky (1/0), ttl ms, turn id, message 1, message 2, ...
# The turn id makes a retried call (reply lost, command resent) store the turn once.
APPEND = (
    _PRELUDE
    + """
if redis.call('HGET', KEYS[1], 'turn_id') == ARGV[5] then return 0 end
local now = now_us()
local ttl = tonumber(ARGV[4])
local expires = now + ttl * 1000
if redis.call('EXISTS', KEYS[1]) == 0 then
  -- new, or expired: an expired session starts afresh (leftovers go too)
  redis.call('DEL', KEYS[2], KEYS[3])
  redis.call('HSET', KEYS[1], 'created', fmt(now), 'turns', 0)
end
local count = 0
-- in slices: unpack() of thousands of values would overflow Lua's C stack
for first = 6, #ARGV, 1000 do
  count = redis.call('RPUSH', KEYS[2], unpack(ARGV, first, math.min(first + 999, #ARGV)))
end
redis.call('RPUSH', KEYS[3], fmt(now) .. ':' .. count)
redis.call('HSET', KEYS[1], 'agent_id', ARGV[2], 'sticky', ARGV[3], 'updated', fmt(now),
  'expires', fmt(expires), 'messages', count, 'turn_id', ARGV[5])
redis.call('HINCRBY', KEYS[1], 'turns', 1)
for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ttl) end
redis.call('ZADD', KEYS[4], fmt(now), ARGV[1])
redis.call('ZADD', KEYS[5], fmt(expires), ARGV[1])
return 1
"""
)

# KEYS: meta, msgs, turns, by-updated, by-expiry; ARGV: session key.
# Returns 1 when the session was live.
DELETE = """
local live = redis.call('EXISTS', KEYS[1])
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('ZREM', KEYS[5], ARGV[1])
return live
"""

# Same keys: forget the index entries of a session that Redis has expired (and any
# leftover of it); leaves a live session alone. Returns 1 when it pruned.
PRUNE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('DEL', KEYS[2], KEYS[3])
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('ZREM', KEYS[5], ARGV[1])
return 1
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
