package memory

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"herald/channels"
)

// A channel's log holds its idempotency keys, so an idle log outlives
// them: with a dedup window longer than MetaTTL, a retry after the log
// would otherwise have been swept is still a duplicate.
func TestIdleLogOutlivesItsIdempotencyKeys(t *testing.T) {
	var mu sync.Mutex
	now := time.Unix(1_800_000_000, 0)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	b := New(Options{MetaTTL: 30 * 24 * time.Hour, IdempotencyTTL: 60 * 24 * time.Hour, Now: clock})
	publish := func() channels.PublishResult {
		t.Helper()
		r, err := b.Publish(context.Background(), "user:1", json.RawMessage(`{"n":1}`), channels.PublishOptions{IdempotencyKey: "k"})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	first := publish()
	mu.Lock()
	now = now.Add(31 * 24 * time.Hour) // idle past MetaTTL, within the window
	mu.Unlock()
	b.sweepOnce()
	if again := publish(); !again.Duplicate || again.Position != first.Position {
		t.Fatalf("retry after 31 idle days: %+v, first %+v", again, first)
	}
}
