package channels

import (
	"context"
	"encoding/json"
	"errors"
	"time"
)

// ErrUnavailable is wrapped by every Broker error that means "the shared log
// cannot be reached right now; nothing was done, try again". The hub turns it
// into the "unavailable" error code, the ingress into HTTP 503.
var ErrUnavailable = errors.New("broker unavailable")

// Position names a place in a channel log: an offset within an epoch.
type Position struct {
	Offset uint64 `json:"offset"`
	Epoch  string `json:"epoch"`
}

// Publication is one entry of a channel log.
type Publication struct {
	Offset uint64
	Epoch  string
	// Data is a valid JSON value, exactly as it was published.
	Data json.RawMessage
}

// PublishOptions tune one Publish call. The zero value appends unconditionally.
type PublishOptions struct {
	// IdempotencyKey, when not empty, makes the append happen at most once
	// per channel and key within IdempotencyTTL: a second Publish with the
	// same key appends nothing and reports the first one's position.
	IdempotencyKey string
	// IdempotencyTTL is how long the key is remembered; 0 means the broker's
	// default.
	IdempotencyTTL time.Duration
}

// PublishResult is what Publish did.
type PublishResult struct {
	Position
	// Duplicate is set when the idempotency key was seen before: nothing was
	// appended and Position is where the first publication went (its epoch
	// may be older than the channel's current one).
	Duplicate bool
}

// HistoryOptions selects publications from a log.
type HistoryOptions struct {
	// Since, when not nil, asks for the publications after Since.Offset,
	// oldest first. If Since.Epoch is not the log's epoch no publications
	// are returned; HistoryResult.Recover tells the caller what that means.
	Since *Position
	// Limit caps the number of publications returned. Without Since it
	// selects the newest Limit; with Since, the first Limit after it. 0
	// returns none without Since and all retained with Since.
	Limit int
	// MaxBytes, when positive, bounds what is read by the size of the
	// publications' data: the selection (the newest without Since, the
	// first after Since with it) stops at the first publication whose data
	// brings the total above MaxBytes, that one included, so at least one
	// is returned whenever any is selected. A caller with an exact bound
	// trims the rest; MaxBytes keeps a broker from loading a thousand
	// large publications to return a few.
	MaxBytes int
}

// HistoryResult is a consistent snapshot of a log.
type HistoryResult struct {
	// Position is the log's newest offset (0 when nothing was ever
	// published) and its epoch.
	Position
	// Earliest is the oldest retained offset, or Offset+1 when nothing is
	// retained.
	Earliest uint64
	// Publications are oldest first.
	Publications []Publication
}

// The reasons a resume can fail, as sent to clients.
const (
	ReasonEpochMismatch = "epoch_mismatch"
	ReasonOffsetExpired = "offset_expired"
)

// Recover tells whether every publication after since is in this log's
// retained history, so that a client that last saw since can be brought up
// to date without a gap; if not, why. A result read with Since = &since and
// no Limit then holds exactly the publications the client missed.
func (r HistoryResult) Recover(since Position) (ok bool, reason string) {
	switch {
	case since.Epoch != r.Epoch:
		return false, ReasonEpochMismatch
	case since.Offset > r.Offset:
		// The client saw offsets this log never had: the log was reset
		// without its epoch changing (an acknowledged write lost in a
		// failover). Treat it as another incarnation.
		return false, ReasonEpochMismatch
	case since.Offset == r.Offset:
		return true, ""
	case r.Earliest > since.Offset+1:
		return false, ReasonOffsetExpired
	}
	return true, ""
}

// Handler receives the live publications of the channels a node subscribed
// to. Calls for one channel come in log order; calls must not block, since
// they hold up delivery of everything behind them.
type Handler interface {
	// HandlePublication is called once per publication appended to a
	// subscribed channel after Subscribe returned.
	HandlePublication(channel string, pub Publication)
	// HandleReset is called when the broker knows that publications of a
	// subscribed channel were lost between two HandlePublication calls (its
	// live feed was interrupted and the log no longer has them, or the log
	// was reset under a new epoch). pos is the log's position after the loss.
	HandleReset(channel string, pos Position, reason string)
}

// Broker is the ordered, shared log behind every channel, plus live
// notification of appends to the nodes that subscribed.
//
// Contract, which every implementation passes channelstest for:
//   - Publish assigns offset = previous + 1 (starting at 1 in a new epoch),
//     appends, and notifies live subscribers in one atomic step: no reader
//     sees offset n+1 without n, and subscribers receive appends in offset
//     order. When Publish returns nil the publication is durable to the
//     extent the implementation is (memory: the process; Redis: its
//     persistence settings).
//   - The log keeps the newest HistorySize publications for HistoryTTL after
//     the last publication. Its offset and epoch outlive the publications
//     themselves, so that a client that was away too long learns
//     offset_expired rather than a reset.
//   - The epoch changes whenever the log's offsets could restart; a log's
//     epoch is fixed from the first call that touches the channel.
//   - Errors that mean "try again later" wrap ErrUnavailable. On any error
//     the publication may or may not have been appended; retrying with the
//     same IdempotencyKey is safe.
//   - Subscribe returns once live delivery of the channel to the Handler is
//     in effect. Subscribe and Unsubscribe of one channel are not called
//     concurrently; the caller counts references.
type Broker interface {
	Publish(ctx context.Context, channel string, data json.RawMessage, opts PublishOptions) (PublishResult, error)
	History(ctx context.Context, channel string, opts HistoryOptions) (HistoryResult, error)
	Subscribe(ctx context.Context, channel string) error
	Unsubscribe(ctx context.Context, channel string) error
	// Start hands the broker its Handler and starts its background work,
	// which runs until Close.
	Start(h Handler) error
	// Ready reports whether the broker can serve requests now.
	Ready(ctx context.Context) error
	Close() error
}
