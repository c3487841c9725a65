package redis

import goredis "github.com/redis/go-redis/v9"

// publishScript appends one publication. It starts a new epoch when the
// channel's meta hash is missing, dropping any stream left from an older
// epoch so offsets can restart at 1.
//
//	KEYS: meta, log, idempotency key
//	ARGV: data, candidate epoch, history size, history TTL ms, meta TTL ms,
//	      idempotency TTL ms ("0": none), pub/sub channel
//	returns {1, "<offset>:<epoch>"} or, for a known idempotency key,
//	{0, "<offset>:<epoch>"} of the first publication
var publishScript = goredis.NewScript(`
local idem = ARGV[6] ~= '0'
if idem then
  local prev = redis.call('GET', KEYS[3])
  if prev then return {0, prev} end
end
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[2]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'top', 0)
end
local top = redis.call('HINCRBY', KEYS[1], 'top', 1)
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[3], top .. '-0', 'd', ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
local pos = top .. ':' .. epoch
if idem then redis.call('SET', KEYS[3], pos, 'PX', ARGV[6]) end
redis.call('SPUBLISH', ARGV[7], pos .. ':' .. ARGV[1])
return {1, pos}
`)

// historyScript reads a consistent snapshot of a log: its epoch, newest and
// oldest retained offsets, and the selected entries. Like publishScript it
// creates the channel's epoch when missing, so that a subscriber to an
// empty channel gets an epoch that later publications keep.
//
//	KEYS: meta, log
//	ARGV: candidate epoch, meta TTL ms, mode ("since" or "newest"),
//	      since offset, since epoch, limit (0: none)
//	returns {epoch, top, earliest, entries}
var historyScript = goredis.NewScript(`
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[1]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'top', 0)
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
local top = tonumber(redis.call('HGET', KEYS[1], 'top'))
local earliest = top + 1
local first = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
if #first > 0 then earliest = tonumber(string.match(first[1][1], '^(%d+)')) end
local limit = tonumber(ARGV[6])
local entries = {}
if ARGV[3] == 'since' then
  local since = tonumber(ARGV[4])
  if ARGV[5] == epoch and since < top then
    local from = (since + 1) .. '-0'
    if limit > 0 then
      entries = redis.call('XRANGE', KEYS[2], from, '+', 'COUNT', limit)
    else
      entries = redis.call('XRANGE', KEYS[2], from, '+')
    end
  end
elseif limit > 0 then
  entries = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', limit)
end
return {epoch, top, earliest, entries}
`)
