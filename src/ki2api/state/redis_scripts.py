"""The Lua scripts of `RedisStore` (state/redis_store.py): each runs atomically in Redis, so a
read-decide-write (a compare-and-set save, a lock, a slot lease, a key's admission) is one step
for every replica. Keys: those a script names are in KEYS; the ones it derives (a lease's
holder set, a key's counters) are built from the store's prefix (ARGV), so the store targets
one Redis server (or a primary with replicas), not Redis Cluster.

Record fields are stored as JSON values (state/redis_store.py), so a state compared here is a
JSON string (`'"revoked"'`). Numbers come in as text and go back as text: a Lua number handed
back to Redis would lose its fraction.
"""

from __future__ import annotations

__all__ = [
    "ADMIT_KEY",
    "CREATE_KEY",
    "DROP_HOLDERS",
    "FREE_SLOT",
    "GET_BY_INDEX",
    "LIST_RECORDS",
    "RECORD_USAGE",
    "REMOVE_ACCOUNT",
    "RENEW_SLOTS",
    "ROTATE_KEY",
    "SAVE_TOKENS",
    "SET_IF_EXISTS",
    "SET_KEY_STATE",
    "SLOTS_IN_USE",
    "TAKE_SLOT",
    "TRY_LOCK",
    "UNLOCK",
    "UPDATE_KEY",
    "UPSERT",
]

# KEYS: record hash, index set, version. ARGV: id, n kept pairs, the kept pairs (written only
# when absent: machine_id, created_at), then the other pairs.
UPSERT = """
local n = tonumber(ARGV[2])
local i = 3
for _ = 1, n do
  redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1])
  i = i + 2
end
for j = i, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[j], ARGV[j + 1]) end
redis.call('SADD', KEYS[2], ARGV[1])
return redis.call('INCR', KEYS[3])
"""

# KEYS: record hash, version. ARGV: field/value pairs. -> {done, version}
SET_IF_EXISTS = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {0, 0} end
redis.call('HSET', KEYS[1], unpack(ARGV))
return {1, redis.call('INCR', KEYS[2])}
"""

# KEYS: account hash, index set, tokens hash, health hash, version. ARGV: id.
REMOVE_ACCOUNT = """
local gone = redis.call('SREM', KEYS[2], ARGV[1])
redis.call('DEL', KEYS[1], KEYS[3])
redis.call('HDEL', KEYS[4], ARGV[1])
return {gone, redis.call('INCR', KEYS[5])}
"""

# KEYS: the index (a set of ids, or a hash whose values are ids). ARGV: the records' key prefix.
# -> one flat HGETALL per record
LIST_RECORDS = """
local ids
if redis.call('TYPE', KEYS[1]).ok == 'hash' then
  ids = redis.call('HVALS', KEYS[1])
else
  ids = redis.call('SMEMBERS', KEYS[1])
end
local out = {}
for _, id in ipairs(ids) do
  local fields = redis.call('HGETALL', ARGV[1] .. id)
  if #fields > 0 then out[#out + 1] = fields end
end
return out
"""

# KEYS: an index hash (field -> id). ARGV: the field, the records' key prefix. -> HGETALL
GET_BY_INDEX = """
local id = redis.call('HGET', KEYS[1], ARGV[1])
if not id then return {} end
return redis.call('HGETALL', ARGV[2] .. id)
"""

# KEYS: tokens hash, version. ARGV: expected version ('' : none stored), data, synced mtime
# ('' : none), updated_at. -> {new version, global version}, or {0, 0} on a conflict
SAVE_TOKENS = """
local cur = redis.call('HGET', KEYS[1], 'version')
local v
if ARGV[1] == '' then
  if cur then return {0, 0} end
  v = 1
else
  if (not cur) or cur ~= ARGV[1] then return {0, 0} end
  v = tonumber(cur) + 1
end
redis.call('HSET', KEYS[1], 'data', ARGV[2], 'version', v, 'synced_mtime_ns', ARGV[3],
  'updated_at', ARGV[4])
return {v, redis.call('INCR', KEYS[2])}
"""

# KEYS: the lock. ARGV: owner, now, expires_at, ttl in ms. The value is "expires_at\\nowner":
# the store's clock decides expiry (as SQLite's does); PX frees the key of a dead owner anyway.
TRY_LOCK = """
local cur = redis.call('GET', KEYS[1])
if cur then
  local sep = string.find(cur, '\\n', 1, true)
  local exp = tonumber(string.sub(cur, 1, sep - 1))
  if string.sub(cur, sep + 1) ~= ARGV[1] and exp >= tonumber(ARGV[2]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[3] .. '\\n' .. ARGV[1], 'PX', ARGV[4])
return 1
"""

# KEYS: the lock. ARGV: owner.
UNLOCK = """
local cur = redis.call('GET', KEYS[1])
if cur and string.sub(cur, string.find(cur, '\\n', 1, true) + 1) == ARGV[1] then
  redis.call('DEL', KEYS[1])
end
return 0
"""

# Slot leases. An account's leases: zset P..'slots:'..account (lease -> expires_at); who holds
# a lease: hash P..'slot_holders' (lease -> "account\\thost\\tpid"); a holder's leases: set
# P..'held:'..host\\tpid; last starts: hash P..'slot_starts'; accounts with leases: set
# P..'slot_accounts'.
_DROP_LEASE = """
local function drop_lease(prefix, lease)
  local tag = redis.call('HGET', prefix .. 'slot_holders', lease)
  if not tag then return end
  local sep = string.find(tag, '\\t', 1, true)
  redis.call('ZREM', prefix .. 'slots:' .. string.sub(tag, 1, sep - 1), lease)
  redis.call('SREM', prefix .. 'held:' .. string.sub(tag, sep + 1), lease)
  redis.call('HDEL', prefix .. 'slot_holders', lease)
end
"""

# ARGV: prefix, account, lease, holder ("host\\tpid"), cap, interval, now, expires_at.
# -> {'taken'} | {'wait', last start} | {'full', holder, holder, ...}
TAKE_SLOT = (
    _DROP_LEASE
    + """
local p, acct, lease, me = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local cap, interval, now = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local zset = p .. 'slots:' .. acct
for _, old in ipairs(redis.call('ZRANGEBYSCORE', zset, '-inf', '(' .. ARGV[7])) do
  drop_lease(p, old)
  redis.call('ZREM', zset, old)
end
if cap > 0 and redis.call('ZCARD', zset) >= cap then
  local out = {'full'}
  for _, l in ipairs(redis.call('ZRANGE', zset, 0, -1)) do
    local tag = redis.call('HGET', p .. 'slot_holders', l)
    if tag then out[#out + 1] = string.sub(tag, string.find(tag, '\\t', 1, true) + 1) end
  end
  return out
end
if interval > 0 then
  local last = redis.call('HGET', p .. 'slot_starts', acct)
  if last and now < tonumber(last) + interval then return {'wait', last} end
  redis.call('HSET', p .. 'slot_starts', acct, ARGV[7])
end
drop_lease(p, lease)
redis.call('ZADD', zset, ARGV[8], lease)
redis.call('HSET', p .. 'slot_holders', lease, acct .. '\\t' .. me)
redis.call('SADD', p .. 'held:' .. me, lease)
redis.call('SADD', p .. 'slot_accounts', acct)
return {'taken'}
"""
)

# ARGV: prefix, lease.
FREE_SLOT = _DROP_LEASE + "drop_lease(ARGV[1], ARGV[2])\nreturn 0\n"

# ARGV: prefix, holder, holder, ... (processes that are gone): every lease of theirs is dropped
DROP_HOLDERS = (
    _DROP_LEASE
    + """
for i = 2, #ARGV do
  for _, lease in ipairs(redis.call('SMEMBERS', ARGV[1] .. 'held:' .. ARGV[i])) do
    drop_lease(ARGV[1], lease)
  end
  redis.call('DEL', ARGV[1] .. 'held:' .. ARGV[i])
end
return 0
"""
)

# ARGV: prefix, holder, expires_at. Leases gone meanwhile are forgotten.
RENEW_SLOTS = """
local p = ARGV[1]
local held = p .. 'held:' .. ARGV[2]
for _, lease in ipairs(redis.call('SMEMBERS', held)) do
  local tag = redis.call('HGET', p .. 'slot_holders', lease)
  local zset = tag and (p .. 'slots:' .. string.sub(tag, 1, string.find(tag, '\\t', 1, true) - 1))
  if zset and redis.call('ZSCORE', zset, lease) then
    redis.call('ZADD', zset, 'XX', ARGV[3], lease)
  else
    redis.call('SREM', held, lease)
  end
end
return 0
"""

# ARGV: prefix, now. -> {account, count, account, count, ...}
SLOTS_IN_USE = """
local p = ARGV[1]
local out = {}
for _, acct in ipairs(redis.call('SMEMBERS', p .. 'slot_accounts')) do
  local zset = p .. 'slots:' .. acct
  local n = redis.call('ZCOUNT', zset, ARGV[2], '+inf')
  if n > 0 then
    out[#out + 1] = acct
    out[#out + 1] = n
  elseif redis.call('ZCARD', zset) == 0 then
    redis.call('SREM', p .. 'slot_accounts', acct)
  end
end
return out
"""

# Client keys: hash P..'ck:'..id (the record), hash P..'ck_names' (name -> id), hash
# P..'ck_hashes' (key hash -> id), hash P..'ck_count:'..id (period..':w' / ':r' / ':t': the
# window, its requests and tokens). A count for an older window than the stored one is dropped.
_BUMP = """
local function bump(key, period, window, requests, tokens)
  local stored = tonumber(redis.call('HGET', key, period .. ':w'))
  local w = tonumber(window)
  if stored == nil or w > stored then
    redis.call('HSET', key, period .. ':w', window, period .. ':r', requests,
      period .. ':t', tokens)
  elseif w == stored then
    redis.call('HINCRBY', key, period .. ':r', requests)
    redis.call('HINCRBY', key, period .. ':t', tokens)
  end
end
"""

# KEYS: record hash, names, hashes. ARGV: id, name, key hash, then the record's pairs.
CREATE_KEY = """
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('HEXISTS', KEYS[2], ARGV[2]) == 1
    or redis.call('HEXISTS', KEYS[3], ARGV[3]) == 1 then
  return 0
end
for i = 4, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[1])
redis.call('HSET', KEYS[3], ARGV[3], ARGV[1])
return 1
"""

# KEYS: record hash. ARGV: field/value pairs (not for revoked keys).
UPDATE_KEY = """
local state = redis.call('HGET', KEYS[1], 'state')
if (not state) or state == '"revoked"' then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
"""

# KEYS: names. ARGV: name, prefix, state (JSON), updated_at (JSON).
SET_KEY_STATE = """
local id = redis.call('HGET', KEYS[1], ARGV[1])
if not id then return 0 end
local key = ARGV[2] .. 'ck:' .. id
if redis.call('HGET', key, 'state') == '"revoked"' then return 0 end
redis.call('HSET', key, 'state', ARGV[3], 'updated_at', ARGV[4])
return 1
"""

# KEYS: names, hashes. ARGV: name, prefix, new hash, new hash (JSON), hint (JSON), updated_at.
ROTATE_KEY = """
local id = redis.call('HGET', KEYS[1], ARGV[1])
if not id then return 0 end
local key = ARGV[2] .. 'ck:' .. id
if redis.call('HGET', key, 'state') == '"revoked"' then return 0 end
if redis.call('HEXISTS', KEYS[2], ARGV[3]) == 1 then return 0 end
local old = redis.call('HGET', key, 'key_hash')
if old then redis.call('HDEL', KEYS[2], cjson.decode(old)) end
redis.call('HSET', KEYS[2], ARGV[3], id)
redis.call('HSET', key, 'key_hash', ARGV[4], 'hint', ARGV[5], 'updated_at', ARGV[6])
return 1
"""

# KEYS: record hash, counters. ARGV: now, the minute, day and month windows of now.
# -> {'ok'} | {'gone'} | {'state', state} | {'expired'} |
#    {'refused', rpm, tpm, daily_tokens, monthly_requests, counter pairs...} (the caller words
#    the verdict with client_key_rules.decide from these very numbers)
ADMIT_KEY = (
    _BUMP
    + """
local f = redis.call('HMGET', KEYS[1], 'state', 'expires_at', 'rpm', 'tpm', 'daily_tokens',
  'monthly_requests')
if not f[1] then return {'gone'} end
if f[1] ~= '"active"' then return {'state', f[1]} end
local now = tonumber(ARGV[1])
local expires = tonumber(f[2])
if expires and expires <= now then return {'expired'} end
local flat = redis.call('HGETALL', KEYS[2])
local c = {}
for i = 1, #flat, 2 do c[flat[i]] = tonumber(flat[i + 1]) end
local periods = {'minute', 'day', 'month'}
local used = {}
for i, p in ipairs(periods) do
  if c[p .. ':w'] == tonumber(ARGV[i + 1]) then
    used[p] = {c[p .. ':r'], c[p .. ':t']}
  else
    used[p] = {0, 0}
  end
end
local function over(limit, n)
  local cap = tonumber(limit)
  return cap ~= nil and n >= cap
end
if over(f[3], used.minute[1]) or over(f[4], used.minute[2]) or over(f[5], used.day[2])
    or over(f[6], used.month[1]) then
  local out = {'refused', f[3], f[4], f[5], f[6]}
  for i = 1, #flat do out[#out + 1] = flat[i] end
  return out
end
for i, p in ipairs(periods) do bump(KEYS[2], p, ARGV[i + 1], 1, 0) end
return {'ok'}
"""
)

# KEYS: the usage stream. ARGV: max length, prefix, n rows, the batch's name ('' for none),
# where to look for it ('' for a first write; for a batch written again, its earliest `at` in
# ms), the rows in pairs (`at` in ms, JSON), then charges in fours: key name, period, window,
# tokens (added to the counters of the key of that name). An entry's id is its row's `at` (or
# the last id, when that is later), so ids never go back and a row's id is never before its
# `at` (Redis >= 7: `ms-*` ids). The batch's last entry carries its name (`b`): a batch written
# again is found among the entries since its earliest row (at most 20,000 read) and, when
# found, nothing is written or charged twice (returns 0).
RECORD_USAGE = (
    _BUMP
    + """
local n = tonumber(ARGV[3])
local batch = ARGV[4]
if ARGV[5] ~= '' and batch ~= '' then
  local since = redis.call('XREVRANGE', KEYS[1], '+', ARGV[5], 'COUNT', 20000)
  for _, entry in ipairs(since) do
    local f = entry[2]
    for k = 1, #f - 1, 2 do
      if f[k] == 'b' and f[k + 1] == batch then return 0 end
    end
  end
end
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local floor = 0
if #last > 0 then floor = tonumber(string.match(last[1][1], '^(%d+)')) end
local final = 4 + 2 * n
for i = 6, final, 2 do
  floor = math.max(floor, tonumber(ARGV[i]))
  local id = string.format('%.0f', floor) .. '-*'
  if i == final and batch ~= '' then
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], id, 'r', ARGV[i + 1], 'b', batch)
  else
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], id, 'r', ARGV[i + 1])
  end
end
for j = 6 + 2 * n, #ARGV, 4 do
  local id = redis.call('HGET', ARGV[2] .. 'ck_names', ARGV[j])
  if id then bump(ARGV[2] .. 'ck_count:' .. id, ARGV[j + 1], ARGV[j + 2], 0, ARGV[j + 3]) end
end
return n
"""
)
