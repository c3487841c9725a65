package channels

import (
	"context"
	"encoding/json"
	"time"
)

// An Appender appends one publication to several channels, and ranks it in
// its sequence, in a single step: on Redis, one round trip instead of one
// per channel and one for the rank (on a Redis Cluster, whose channels live
// on different masters, one per channel, each ranking in the channel's own
// copy of the sequence). Brokers that can (Redis) offer one; callers
// without one (the embedded broker) do the same with Publish per channel.
//
// Each channel's append is idempotent under opts.IdempotencyKey as with
// Publish. When every channel already had the key, nothing is appended and
// the sequence is left as it was: a retry changes nothing.
type Appender interface {
	Append(ctx context.Context, channels []string, data json.RawMessage, opts PublishOptions, seq *Sequence) (AppendResult, error)
}

// A Deduplicator tells whether a channel already appended a publication
// under an idempotency key (within the key's TTL). A caller without an
// Appender asks it before ranking a publication, so that a retry leaves
// the sequence as it was, as an Appender does.
type Deduplicator interface {
	Seen(ctx context.Context, channel, key string) (bool, error)
}

// A Sequence ranks a publication among the others of one sequence (the
// statuses of one payment), so that one arriving after a higher-ranked one
// is published marked as late, never dropped.
type Sequence struct {
	// Key names the sequence.
	Key string
	// Label is recorded as the sequence's current one with Rank, unless a
	// higher rank is recorded already: the publication is then late.
	Label string
	Rank  int
	// TTL is how long the sequence is remembered after its last record.
	TTL time.Duration
	// A late publication's data is marked by splicing Before, the current
	// label as a JSON string, and After into it at byte At: for a JSON
	// object, At just after a member's comma and After a comma.
	At            int
	Before, After string
}

// Mark returns data as a late publication of seq carries it, current being
// the sequence's current label.
func (seq *Sequence) Mark(data []byte, current string) []byte {
	label, _ := json.Marshal(current) // a string always marshals
	out := make([]byte, 0, len(data)+len(seq.Before)+len(label)+len(seq.After))
	out = append(out, data[:seq.At]...)
	out = append(out, seq.Before...)
	out = append(out, label...)
	out = append(out, seq.After...)
	return append(out, data[seq.At:]...)
}

// AppendResult is what Append did.
type AppendResult struct {
	// Results has one entry per channel, in order.
	Results []PublishResult
	// Late is set when the publication was outranked in its sequence;
	// Current is then the sequence's current label.
	Late    bool
	Current string
}
