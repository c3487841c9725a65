// Package redisstore keeps the ingress's shared state in Redis, so that
// every node sees the same: the dead letters operators read, and the latest
// status of each provider transaction (for stale marking). Deduplication
// of provider retries needs no store of its own: it rides on the channel
// logs' idempotency keys.
//
// Keys: herald:deadletters (a list, newest first, capped) and
// herald:status:{<txn>} (a hash of status and rank, expiring after the
// dedup window).
package redisstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"herald/channels"
	"herald/channels/redis"
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

// Statuses is an ingress.StatusStore in Redis, for a Redis Cluster: on a
// single Redis the ingress ranks statuses with its appends, in one script
// (redis.Broker.Appender), on the same keys.
type Statuses struct {
	client goredis.UniversalClient
}

var _ ingress.StatusStore = (*Statuses)(nil)

// NewStatuses returns a store on client.
func NewStatuses(client goredis.UniversalClient) *Statuses { return &Statuses{client: client} }

// Advance implements ingress.StatusStore.
func (s *Statuses) Advance(ctx context.Context, txn, status string, rank int, ttl time.Duration) (string, bool, error) {
	current, stale, err := redis.Rank(ctx, s.client, txn, status, rank, ttl)
	return current, stale, wrap("recording a status", err)
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
