package redis

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"herald/channels"
)

// Appender returns the broker as a channels.Appender: one script, one
// round trip, for all the channels of a publication and its sequence. On a
// Redis Cluster it returns nil: a publication's channels live in different
// slots, which no script may touch together.
func (b *Broker) Appender() channels.Appender {
	if b.cluster != nil {
		return nil
	}
	return appender{b}
}

type appender struct{ b *Broker }

// SequenceKey is the Redis key of a channels.Sequence: a hash of the
// current label (field status) and its rank.
func SequenceKey(key string) string { return "herald:status:{" + key + "}" }

// Rank records label with rank in the sequence key unless a higher rank is
// recorded, and returns the current label and whether label was late: the
// ranking Append does, alone. The sequence's hash is one key, so Rank works
// on a Redis Cluster too.
func Rank(ctx context.Context, client goredis.UniversalClient, key, label string, rank int, ttl time.Duration) (current string, late bool, err error) {
	reply, err := rankScript.Run(ctx, client, []string{SequenceKey(key)}, rank, label, ms(ttl)).Slice()
	if err != nil {
		return "", false, unavailable("rank", err)
	}
	if len(reply) != 2 {
		return "", false, fmt.Errorf("redis rank: unexpected reply %v", reply)
	}
	flag, _ := reply[0].(int64)
	current, _ = reply[1].(string)
	return current, flag == 1, nil
}

// Append implements channels.Appender.
func (a appender) Append(ctx context.Context, chans []string, data json.RawMessage, opts channels.PublishOptions, seq *channels.Sequence) (channels.AppendResult, error) {
	if len(chans) == 0 {
		return channels.AppendResult{}, errors.New("redis append: no channel")
	}
	b := a.b
	keys := make([]string, 0, 3*len(chans)+1)
	args := make([]any, 0, 7+len(chans)+6)
	args = append(args, len(chans), []byte(data), newEpoch(), b.opts.HistorySize,
		ms(b.opts.HistoryTTL), ms(b.opts.MetaTTL), b.idemTTL(opts))
	for _, ch := range chans {
		keys = append(keys, b.metaKey(ch), b.logKey(ch), b.idemKey(ch, opts.IdempotencyKey))
		args = append(args, feedName(ch))
	}
	if seq != nil {
		if seq.At < 0 || seq.At > len(data) {
			return channels.AppendResult{}, fmt.Errorf("redis append: splice offset %d outside %d bytes of data", seq.At, len(data))
		}
		keys = append(keys, SequenceKey(seq.Key))
		args = append(args, seq.Rank, seq.Label, ms(seq.TTL), seq.At, seq.Before, seq.After)
	}
	reply, err := appendScript.Run(ctx, b.client, keys, args...).Slice()
	if err != nil {
		return channels.AppendResult{}, unavailable("append", err)
	}
	if len(reply) != 2+2*len(chans) {
		return channels.AppendResult{}, fmt.Errorf("redis append: unexpected reply %v", reply)
	}
	late, _ := reply[0].(int64)
	current, _ := reply[1].(string)
	res := channels.AppendResult{Results: make([]channels.PublishResult, len(chans)), Late: late == 1, Current: current}
	for i := range chans {
		flag, _ := reply[2+2*i].(int64)
		s, _ := reply[3+2*i].(string)
		pos, err := parsePosition(s)
		if err != nil {
			return channels.AppendResult{}, fmt.Errorf("redis append: %w", err)
		}
		res.Results[i] = channels.PublishResult{Position: pos, Duplicate: flag == 0}
	}
	return res, nil
}

// idemTTL is the idempotency TTL argument of the scripts: "0" without a key.
func (b *Broker) idemTTL(opts channels.PublishOptions) string {
	if opts.IdempotencyKey == "" {
		return "0"
	}
	if opts.IdempotencyTTL > 0 {
		return ms(opts.IdempotencyTTL)
	}
	return ms(b.opts.IdempotencyTTL)
}
