package memory

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"herald/channels"
	"herald/internal/stacks"
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

// blockingHandler holds the delivery of one channel's publications until
// released.
type blockingHandler struct {
	channel  string
	entered  chan struct{}
	released chan struct{}
}

func (h *blockingHandler) HandlePublication(channel string, _ channels.Publication) {
	if channel == h.channel {
		close(h.entered)
		<-h.released
	}
}

func (h *blockingHandler) HandleReset(string, channels.Position, string) {}

// A sweep that reaches a channel in the middle of a long delivery waits
// for that channel alone: other channels publish meanwhile.
func TestSweepWaitsForABusyChannelAlone(t *testing.T) {
	b := New(Options{})
	h := &blockingHandler{channel: "merchant:big", entered: make(chan struct{}), released: make(chan struct{})}
	if err := b.Start(h); err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx := context.Background()
	go func() { _, _ = b.Publish(ctx, "merchant:big", json.RawMessage(`{}`), channels.PublishOptions{}) }()
	<-h.entered
	swept := make(chan struct{})
	go func() { b.sweepOnce(); close(swept) }()
	// The sweep reaches the busy channel and waits for it.
	for deadline := time.Now().Add(10 * time.Second); !stacks.Parked("sync.Mutex.Lock", "memory.(*Broker).sweepOnce("); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the sweep never waited for the busy channel")
		}
	}

	published := make(chan error, 1)
	go func() {
		_, err := b.Publish(ctx, "user:1", json.RawMessage(`{}`), channels.PublishOptions{})
		published <- err
	}()
	select {
	case err := <-published:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		close(h.released)
		t.Fatal("a publication to another channel waited for the busy channel's delivery")
	}
	close(h.released)
	<-swept
}

// A history kept longer than the default MetaTTL still leaves the offset
// and epoch behind when it expires: a client back after that is told its
// publications expired, not that the channel is another one.
func TestLongHistoryExpiresBeforeItsEpoch(t *testing.T) {
	var mu sync.Mutex
	now := time.Unix(1_800_000_000, 0)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	b := New(Options{HistoryTTL: 40 * 24 * time.Hour, Now: clock})
	ctx := context.Background()
	var last channels.PublishResult
	for range 3 {
		r, err := b.Publish(ctx, "user:1", json.RawMessage(`{}`), channels.PublishOptions{})
		if err != nil {
			t.Fatal(err)
		}
		last = r
	}
	mu.Lock()
	now = now.Add(41 * 24 * time.Hour) // past the history, past the default MetaTTL
	mu.Unlock()
	b.sweepOnce()
	if _, err := b.Publish(ctx, "user:1", json.RawMessage(`{}`), channels.PublishOptions{}); err != nil {
		t.Fatal(err)
	}
	since := channels.Position{Offset: 1, Epoch: last.Epoch}
	res, err := b.History(ctx, "user:1", channels.HistoryOptions{Since: &since})
	if err != nil {
		t.Fatal(err)
	}
	if ok, reason := res.Recover(since); ok || reason != channels.ReasonOffsetExpired {
		t.Fatalf("resume after the history expired: %v %q (log %+v), want offset_expired", ok, reason, res)
	}
}
