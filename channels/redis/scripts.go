package redis

import goredis "github.com/redis/go-redis/v9"

// appendLua is a Lua function both append scripts define: it appends one
// publication to one channel. It starts a new epoch when the channel's meta
// hash is missing, dropping any stream left from an older epoch so offsets
// can restart at 1. It returns 1 and "<offset>:<epoch>", or, for a known
// idempotency key (idemTTL not "0"), 0 and the first publication's.
const appendLua = `
local function append(meta, log, idem, data, candidate, size, histTTL, metaTTL, idemTTL, feed)
  local idem_on = idemTTL ~= '0'
  if idem_on then
    local prev = redis.call('GET', idem)
    if prev then return 0, prev end
  end
  local epoch = redis.call('HGET', meta, 'epoch')
  if not epoch then
    epoch = candidate
    redis.call('DEL', log)
    redis.call('HSET', meta, 'epoch', epoch, 'top', 0)
  end
  local top = redis.call('HINCRBY', meta, 'top', 1)
  redis.call('XADD', log, 'MAXLEN', size, top .. '-0', 'd', data)
  redis.call('PEXPIRE', log, histTTL)
  redis.call('PEXPIRE', meta, metaTTL)
  local pos = top .. ':' .. epoch
  if idem_on then redis.call('SET', idem, pos, 'PX', idemTTL) end
  redis.call('SPUBLISH', feed, pos .. ':' .. data)
  return 1, pos
end
`

// rankLua is a Lua function that ranks a label in a sequence's hash (see
// channels.Sequence): it records label with rank, for ttl ms, unless a
// higher rank is recorded, and returns 1 (late) or 0 and the current
// label. Equal ranks replace each other.
const rankLua = `
local function rank(key, r, label, ttl)
  local cur = redis.call('HMGET', key, 'status', 'rank')
  if cur[1] and tonumber(cur[2]) > tonumber(r) then return 1, cur[1] end
  redis.call('HSET', key, 'status', label, 'rank', r)
  redis.call('PEXPIRE', key, ttl)
  return 0, label
end
`

// publishScript appends one publication.
//
//	KEYS: meta, log, idempotency key
//	ARGV: data, candidate epoch, history size, history TTL ms, meta TTL ms,
//	      idempotency TTL ms ("0": none), pub/sub channel
//	returns {1, "<offset>:<epoch>"} or, for a known idempotency key,
//	{0, "<offset>:<epoch>"} of the first publication
var publishScript = goredis.NewScript(appendLua + `
local flag, pos = append(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7])
return {flag, pos}
`)

// appendScript appends one publication to n channels and, when ARGV has a
// sequence, ranks it first (see channels.Sequence). When every channel
// has the idempotency key already, nothing changes, the sequence included.
//
//	KEYS: meta, log and idempotency key of each channel, then the
//	      sequence's hash (fields status, rank) if any
//	ARGV: n, data, candidate epoch, history size, history TTL ms, meta TTL
//	      ms, idempotency TTL ms ("0": none), the n pub/sub channels, then
//	      the sequence if any: rank, label, TTL ms, splice offset, before,
//	      after
//	returns {late (0 or 1), current label ("" without a sequence), then
//	flag and position per channel as publishScript}
var appendScript = goredis.NewScript(appendLua + rankLua + `
local n = tonumber(ARGV[1])
local data, idemTTL = ARGV[2], ARGV[7]
local fresh = idemTTL == '0'
for i = 1, n do
  if fresh then break end
  fresh = redis.call('EXISTS', KEYS[3*i]) == 0
end
local late, current = 0, ''
local s = 8 + n
if fresh and ARGV[s] then
  late, current = rank(KEYS[3*n+1], ARGV[s], ARGV[s+1], ARGV[s+2])
  if late == 1 then
    local at = tonumber(ARGV[s+3])
    data = string.sub(data, 1, at) .. ARGV[s+4] .. cjson.encode(current) .. ARGV[s+5] .. string.sub(data, at+1)
  end
end
local out = {late, current}
for i = 1, n do
  local flag, pos = append(KEYS[3*i-2], KEYS[3*i-1], KEYS[3*i], data, ARGV[3], ARGV[4], ARGV[5], ARGV[6], idemTTL, ARGV[7+i])
  out[#out+1] = flag
  out[#out+1] = pos
end
return out
`)

// historyScript reads a consistent snapshot of a log: its epoch, newest and
// oldest retained offsets, and the selected entries. Like publishScript it
// creates the channel's epoch when missing, so that a subscriber to an
// empty channel gets an epoch that later publications keep.
//
//	KEYS: meta, log
//	ARGV: candidate epoch, meta TTL ms, mode ("since", "resync" or
//	      "newest"), since offset, since epoch, limit (0: none), max bytes
//	      of data (0: none), SHA-1 of the data handed on at since
//	      ("resync"; "": unknown)
//	returns {epoch, top, earliest, entries}
//
// "resync" is "since" for a position the node handed on itself: one
// beyond the newest offset in the same epoch, or other data at it, means
// the log went back to an older state, and it takes the candidate epoch
// (Broker.history).
//
// With max bytes the entries are read a page at a time, each page sized
// by what the rest of the bound holds at the entries' size so far, and the
// selection stops at the first entry whose data brings the total above
// it, that one included (channels.HistoryOptions.MaxBytes): neither the
// script nor the node holds much more than the caller can use.
var historyScript = goredis.NewScript(`
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[1]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'top', 0)
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
local top = tonumber(redis.call('HGET', KEYS[1], 'top'))
if ARGV[3] == 'resync' and ARGV[5] == epoch then
  local since = tonumber(ARGV[4])
  local lost = since > top
  if not lost and since > 0 and ARGV[8] ~= '' then
    local at = redis.call('XRANGE', KEYS[2], since .. '-0', since .. '-0')
    lost = #at > 0 and redis.sha1hex(at[1][2][2]) ~= ARGV[8]
  end
  if lost then
    epoch = ARGV[1]
    redis.call('HSET', KEYS[1], 'epoch', epoch)
  end
end
local earliest = top + 1
local first = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
if #first > 0 then earliest = tonumber(string.match(first[1][1], '^(%d+)')) end
local limit, budget = tonumber(ARGV[6]), tonumber(ARGV[7])

-- read selects entries with cmd (XRANGE or XREVRANGE) from the entry id
-- from towards to: at most limit (0: all), within the byte budget.
local function read(cmd, from, to)
  if budget == 0 then
    if limit > 0 then return redis.call(cmd, KEYS[2], from, to, 'COUNT', limit) end
    return redis.call(cmd, KEYS[2], from, to)
  end
  -- A page is as many entries as the rest of the budget holds at the
  -- size seen so far (one to begin with, at most 64), so that Redis too
  -- reads little more than it returns.
  local out, size, want = {}, 0, 1
  while true do
    if limit > 0 then want = math.min(want, limit - #out) end
    if want == 0 then return out end
    local page = redis.call(cmd, KEYS[2], from, to, 'COUNT', want)
    for _, e in ipairs(page) do
      out[#out+1] = e
      size = size + #e[2][2]
      if size > budget then return out end
    end
    if #page < want then return out end
    from = '(' .. page[#page][1]
    want = 64
    if size > 0 then want = math.max(1, math.min(64, math.floor((budget - size) * #out / size) + 1)) end
  end
end

local entries = {}
if ARGV[3] == 'since' or ARGV[3] == 'resync' then
  local since = tonumber(ARGV[4])
  if ARGV[5] == epoch and since < top then
    entries = read('XRANGE', (since + 1) .. '-0', '+')
  end
elseif limit > 0 then
  entries = read('XREVRANGE', '+', '-')
end
return {epoch, top, earliest, entries}
`)
