package redis

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"herald/channels"
)

// Appender returns the broker as a channels.Appender: one script, one
// round trip, for all the channels of a publication and its sequence.
//
// On a Redis Cluster a publication's channels live in different slots,
// which no script may touch together: there each channel gets its own
// script, which ranks the publication in a copy of the sequence kept in
// the channel's slot (ChannelSequenceKey). A channel's stale marks then
// follow its own log's order, whatever order two nodes append in.
func (b *Broker) Appender() channels.Appender {
	return appender{b: b, perChannel: b.cluster != nil}
}

type appender struct {
	b *Broker
	// perChannel: one script per channel, as on a Cluster (a benchmark
	// asks for it on a single Redis too).
	perChannel bool
}

// SequenceKey is the Redis key of a channels.Sequence: a hash of the
// current label (field status) and its rank.
func SequenceKey(key string) string { return "herald:status:{" + key + "}" }

// ChannelSequenceKey is a sequence's key for one channel on a Redis
// Cluster, in the channel's slot.
func ChannelSequenceKey(ch, key string) string { return "herald:{" + ch + "}:status:" + key }

// Append implements channels.Appender. On a Cluster the result's Late and
// Current are the first channel's.
func (a appender) Append(ctx context.Context, chans []string, data json.RawMessage, opts channels.PublishOptions, seq *channels.Sequence) (channels.AppendResult, error) {
	if len(chans) == 0 {
		return channels.AppendResult{}, errors.New("redis append: no channel")
	}
	if seq != nil && (seq.At < 0 || seq.At > len(data)) {
		return channels.AppendResult{}, fmt.Errorf("redis append: splice offset %d outside %d bytes of data", seq.At, len(data))
	}
	if !a.perChannel {
		return a.run(ctx, chans, data, opts, seq)
	}
	var res channels.AppendResult
	for i := range chans {
		r, err := a.run(ctx, chans[i:i+1], data, opts, seq)
		if err != nil {
			// What was appended stays; the caller's retry completes the
			// rest under the same idempotency key.
			return res, err
		}
		if i == 0 {
			res.Late, res.Current = r.Late, r.Current
		}
		res.Results = append(res.Results, r.Results...)
	}
	return res, nil
}

// run appends to chans in one script, ranking seq in its key: the
// sequence's own, or on a Cluster the copy in the one channel's slot.
func (a appender) run(ctx context.Context, chans []string, data json.RawMessage, opts channels.PublishOptions, seq *channels.Sequence) (channels.AppendResult, error) {
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
		seqKey := SequenceKey(seq.Key)
		if a.perChannel {
			seqKey = ChannelSequenceKey(chans[0], seq.Key)
		}
		keys = append(keys, seqKey)
		args = append(args, seq.Rank, seq.Label, ms(seq.TTL), seq.At, seq.Before, seq.After)
	}
	reply, err := b.run(ctx, appendScript, keys, args...).Slice()
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
