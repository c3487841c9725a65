// Package redisstore keeps the ingress's dead letters in Redis, so that
// every node sees the same. The rest of the ingress's shared state rides
// on the channel logs: deduplication of provider retries on their
// idempotency keys, and the latest status of each provider transaction
// (for stale marking) in the appends' own script (redis.Broker.Appender).
//
// Key: herald:deadletters (a list, newest first, capped).
package redisstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	goredis "github.com/redis/go-redis/v9"

	"herald/channels"
	"herald/ingress"
)

// DeadLetters is an ingress.DeadLetterStore in Redis.
type DeadLetters struct {
	client goredis.UniversalClient
	max    int
}

var _ ingress.DeadLetterStore = (*DeadLetters)(nil)

const deadLettersKey = "herald:deadletters"

// NewDeadLetters keeps the newest max dead letters.
func NewDeadLetters(client goredis.UniversalClient, max int) *DeadLetters {
	return &DeadLetters{client: client, max: max}
}

// Add implements ingress.DeadLetterStore.
func (d *DeadLetters) Add(ctx context.Context, dl ingress.DeadLetter) error {
	b, err := json.Marshal(dl)
	if err != nil {
		return err
	}
	_, err = d.client.TxPipelined(ctx, func(p goredis.Pipeliner) error {
		p.LPush(ctx, deadLettersKey, b)
		p.LTrim(ctx, deadLettersKey, 0, int64(d.max-1))
		return nil
	})
	return wrap("adding a dead letter", err)
}

// listScript reads the newest dead letters, at most ARGV[1] of them and,
// beyond the first, no more than ARGV[2] bytes, a page of 32 at a time:
// one script, so that dead letters pushed meanwhile shift nothing under
// it, and Redis never builds a reply much larger than the bound.
//
//	KEYS: the list
//	returns {dead letters, 1 if it stopped on the bytes with more left}
var listScript = goredis.NewScript(`
local limit, budget = tonumber(ARGV[1]), tonumber(ARGV[2])
local out, size, from = {}, 0, 0
while #out < limit do
  local page = redis.call('LRANGE', KEYS[1], from, from + math.min(31, limit - #out - 1))
  for _, v in ipairs(page) do
    size = size + #v
    if size > budget and #out > 0 then return {out, 1} end
    out[#out+1] = v
  end
  if #page < 32 then break end
  from = from + #page
end
return {out, 0}
`)

// List implements ingress.DeadLetterStore.
func (d *DeadLetters) List(ctx context.Context, limit, maxBytes int) ([]ingress.DeadLetter, bool, error) {
	reply, err := listScript.Run(ctx, d.client, []string{deadLettersKey}, limit, maxBytes).Slice()
	if err != nil {
		return nil, false, wrap("listing dead letters", err)
	}
	if len(reply) != 2 {
		return nil, false, fmt.Errorf("redis: listing dead letters: unexpected reply %v", reply)
	}
	items, _ := reply[0].([]any)
	more, _ := reply[1].(int64)
	out := make([]ingress.DeadLetter, 0, len(items))
	for _, it := range items {
		s, _ := it.(string)
		var dl ingress.DeadLetter
		if err := json.Unmarshal([]byte(s), &dl); err != nil {
			return nil, false, fmt.Errorf("dead letter in Redis is not JSON: %w", err)
		}
		out = append(out, dl)
	}
	return out, more == 1, nil
}

// wrap marks Redis failures as channels.ErrUnavailable: the ingress answers
// 503 and the provider retries.
func wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, channels.ErrUnavailable) {
		return fmt.Errorf("redis: %s: %w", op, err)
	}
	return fmt.Errorf("redis: %s: %w: %v", op, channels.ErrUnavailable, err)
}
