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

// deadLetterPage is how many dead letters one read takes: a page of the
// largest is 2 MiB.
const deadLetterPage = 32

// List implements ingress.DeadLetterStore. It reads a page at a time, so
// that a listing bounded by its bytes never holds more than a page beyond
// them.
func (d *DeadLetters) List(ctx context.Context, limit, maxBytes int) ([]ingress.DeadLetter, bool, error) {
	out := make([]ingress.DeadLetter, 0, min(limit, deadLetterPage))
	size := 0
	for len(out) < limit {
		from := int64(len(out))
		items, err := d.client.LRange(ctx, deadLettersKey, from, from+int64(min(deadLetterPage, limit-len(out)))-1).Result()
		if err != nil {
			return nil, false, wrap("listing dead letters", err)
		}
		for _, s := range items {
			if size += len(s); size > maxBytes && len(out) > 0 {
				return out, true, nil
			}
			var dl ingress.DeadLetter
			if err := json.Unmarshal([]byte(s), &dl); err != nil {
				return nil, false, fmt.Errorf("dead letter in Redis is not JSON: %w", err)
			}
			out = append(out, dl)
		}
		if len(items) < deadLetterPage {
			break
		}
	}
	return out, false, nil
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
