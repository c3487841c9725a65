// Package channelstest is the conformance suite every channels.Broker
// implementation passes: offsets, epochs, retention, idempotency, history
// and live delivery, as the Broker contract states them.
package channelstest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"herald/channels"
)

// Options are the retention settings a factory must apply.
type Options struct {
	HistorySize int
	HistoryTTL  time.Duration
}

// Factory returns a new, started broker with the given handler, empty of
// channels the test will use. It is closed by the suite.
type Factory func(t *testing.T, opts Options, h channels.Handler) channels.Broker

// Run runs the suite.
func Run(t *testing.T, newBroker Factory) {
	t.Run("OffsetsStartAtOneAndIncrease", func(t *testing.T) { testOffsets(t, newBroker) })
	t.Run("EpochIsStableAndSharedByReaders", func(t *testing.T) { testEpoch(t, newBroker) })
	t.Run("HistoryNewestAndSince", func(t *testing.T) { testHistory(t, newBroker) })
	t.Run("HistoryWithinMaxBytes", func(t *testing.T) { testHistoryBytes(t, newBroker) })
	t.Run("RetentionKeepsNewestSize", func(t *testing.T) { testSize(t, newBroker) })
	t.Run("RetentionTTLKeepsOffset", func(t *testing.T) { testTTL(t, newBroker) })
	t.Run("IdempotencyKey", func(t *testing.T) { testIdempotency(t, newBroker) })
	t.Run("LiveDeliveryInOrder", func(t *testing.T) { testLive(t, newBroker) })
	t.Run("ConcurrentPublishersGetDistinctOffsets", func(t *testing.T) { testConcurrent(t, newBroker) })
	t.Run("DataKeptExactly", func(t *testing.T) { testData(t, newBroker) })
}

// Recorder is a channels.Handler that records what it is given.
type Recorder struct {
	mu     sync.Mutex
	pubs   map[string][]channels.Publication
	resets map[string][]channels.Position
	notify chan struct{}
}

// NewRecorder returns an empty Recorder.
func NewRecorder() *Recorder {
	return &Recorder{pubs: map[string][]channels.Publication{}, resets: map[string][]channels.Position{}, notify: make(chan struct{}, 1)}
}

// HandlePublication implements channels.Handler.
func (r *Recorder) HandlePublication(ch string, p channels.Publication) {
	r.mu.Lock()
	r.pubs[ch] = append(r.pubs[ch], p)
	r.mu.Unlock()
	select {
	case r.notify <- struct{}{}:
	default:
	}
}

// HandleReset implements channels.Handler.
func (r *Recorder) HandleReset(ch string, pos channels.Position, _ string) {
	r.mu.Lock()
	r.resets[ch] = append(r.resets[ch], pos)
	r.mu.Unlock()
}

// Wait returns the publications of ch once there are n, or fails after 5s.
func (r *Recorder) Wait(t *testing.T, ch string, n int) []channels.Publication {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		r.mu.Lock()
		got := append([]channels.Publication(nil), r.pubs[ch]...)
		r.mu.Unlock()
		if len(got) >= n {
			return got
		}
		select {
		case <-r.notify:
		case <-time.After(10 * time.Millisecond):
		case <-deadline:
			t.Fatalf("%s: %d live publications after 5s, want %d", ch, len(got), n)
		}
	}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

func start(t *testing.T, f Factory, o Options) (channels.Broker, *Recorder) {
	if o.HistorySize == 0 {
		o.HistorySize = 100
	}
	if o.HistoryTTL == 0 {
		o.HistoryTTL = time.Hour
	}
	r := NewRecorder()
	b := f(t, o, r)
	t.Cleanup(func() { _ = b.Close() })
	return b, r
}

func data(i int) json.RawMessage { return json.RawMessage(fmt.Sprintf(`{"n":%d}`, i)) }

func publish(t *testing.T, b channels.Broker, ch string, i int) channels.PublishResult {
	t.Helper()
	r, err := b.Publish(ctx(t), ch, data(i), channels.PublishOptions{})
	if err != nil {
		t.Fatalf("publish %d: %v", i, err)
	}
	return r
}

func history(t *testing.T, b channels.Broker, ch string, o channels.HistoryOptions) channels.HistoryResult {
	t.Helper()
	r, err := b.History(ctx(t), ch, o)
	if err != nil {
		t.Fatalf("history: %v", err)
	}
	return r
}

func testOffsets(t *testing.T, f Factory) {
	b, _ := start(t, f, Options{})
	if r := history(t, b, "user:empty", channels.HistoryOptions{Limit: 10}); r.Offset != 0 || len(r.Publications) != 0 || r.Epoch == "" {
		t.Fatalf("empty channel: %+v", r)
	}
	for i := 1; i <= 5; i++ {
		if r := publish(t, b, "user:1", i); r.Offset != uint64(i) || r.Duplicate {
			t.Fatalf("publish %d got %+v", i, r)
		}
	}
	if r := publish(t, b, "user:2", 1); r.Offset != 1 {
		t.Fatalf("channels share offsets: %+v", r)
	}
}

func testEpoch(t *testing.T, f Factory) {
	b, _ := start(t, f, Options{})
	before := history(t, b, "user:e", channels.HistoryOptions{})
	p := publish(t, b, "user:e", 1)
	after := history(t, b, "user:e", channels.HistoryOptions{})
	if before.Epoch == "" || before.Epoch != p.Epoch || p.Epoch != after.Epoch {
		t.Fatalf("epoch changed: %q %q %q", before.Epoch, p.Epoch, after.Epoch)
	}
}

func testHistory(t *testing.T, f Factory) {
	b, _ := start(t, f, Options{})
	for i := 1; i <= 10; i++ {
		publish(t, b, "user:h", i)
	}
	r := history(t, b, "user:h", channels.HistoryOptions{Limit: 3})
	assertOffsets(t, r.Publications, 8, 10)
	if r.Offset != 10 || r.Earliest != 1 {
		t.Fatalf("top %d earliest %d", r.Offset, r.Earliest)
	}
	since := &channels.Position{Offset: 4, Epoch: r.Epoch}
	r = history(t, b, "user:h", channels.HistoryOptions{Since: since})
	assertOffsets(t, r.Publications, 5, 10)
	if ok, _ := r.Recover(*since); !ok {
		t.Fatal("not recoverable")
	}
	r = history(t, b, "user:h", channels.HistoryOptions{Since: since, Limit: 2})
	assertOffsets(t, r.Publications, 5, 6)
	r = history(t, b, "user:h", channels.HistoryOptions{Since: &channels.Position{Offset: 10, Epoch: r.Epoch}})
	assertOffsets(t, r.Publications, 11, 10)
	r = history(t, b, "user:h", channels.HistoryOptions{Since: &channels.Position{Offset: 4, Epoch: "other"}})
	if len(r.Publications) != 0 {
		t.Fatal("publications returned for another epoch")
	}
	if ok, reason := r.Recover(channels.Position{Offset: 4, Epoch: "other"}); ok || reason != channels.ReasonEpochMismatch {
		t.Fatalf("recover across epochs: %v %q", ok, reason)
	}
	r = history(t, b, "user:h", channels.HistoryOptions{})
	if len(r.Publications) != 0 || r.Offset != 10 {
		t.Fatalf("limit 0 without since: %+v", r)
	}
}

// testHistoryBytes holds brokers to HistoryOptions.MaxBytes: the selection
// stops at the publication that brings the data above the bound, that one
// included, from the end the request selects; Limit still applies.
func testHistoryBytes(t *testing.T, f Factory) {
	b, _ := start(t, f, Options{HistorySize: 1000})
	const size = 100
	padded := func(i int) json.RawMessage {
		d := fmt.Sprintf(`{"n":%03d,"pad":"`, i)
		return json.RawMessage(d + strings.Repeat("x", size-len(d)-2) + `"}`)
	}
	for i := 1; i <= 10; i++ {
		if _, err := b.Publish(ctx(t), "user:bytes", padded(i), channels.PublishOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	epoch := history(t, b, "user:bytes", channels.HistoryOptions{}).Epoch
	since := func(off uint64) *channels.Position { return &channels.Position{Offset: off, Epoch: epoch} }
	for _, c := range []struct {
		name     string
		opts     channels.HistoryOptions
		from, to uint64
	}{
		{"newest, bound inside the third", channels.HistoryOptions{Limit: 10, MaxBytes: 2*size + size/2}, 8, 10},
		{"newest, bound on the third's end", channels.HistoryOptions{Limit: 10, MaxBytes: 3 * size}, 7, 10},
		{"newest, limit before bound", channels.HistoryOptions{Limit: 2, MaxBytes: 5 * size}, 9, 10},
		{"since, bound inside the third", channels.HistoryOptions{Since: since(0), MaxBytes: 2*size + size/2}, 1, 3},
		{"since, bound of one byte", channels.HistoryOptions{Since: since(4), MaxBytes: 1}, 5, 5},
		{"since, limit before bound", channels.HistoryOptions{Since: since(4), Limit: 2, MaxBytes: 5 * size}, 5, 6},
		{"since, bound beyond the log", channels.HistoryOptions{Since: since(6), MaxBytes: 100 * size}, 7, 10},
		{"since the top", channels.HistoryOptions{Since: since(10), MaxBytes: 1}, 11, 10},
	} {
		r := history(t, b, "user:bytes", c.opts)
		t.Run(c.name, func(t *testing.T) { assertOffsets(t, r.Publications, c.from, c.to) })
		for _, p := range r.Publications {
			if !bytes.Equal(p.Data, padded(int(p.Offset))) {
				t.Fatalf("%s: offset %d has data %s", c.name, p.Offset, p.Data)
			}
		}
	}
	// Longer selections than a broker may read at once.
	for i := 1; i <= 300; i++ {
		publish(t, b, "user:many", i)
	}
	r := history(t, b, "user:many", channels.HistoryOptions{Limit: 1000, MaxBytes: 1 << 20})
	assertOffsets(t, r.Publications, 1, 300)
	r = history(t, b, "user:many", channels.HistoryOptions{Limit: 250, MaxBytes: 1 << 20})
	assertOffsets(t, r.Publications, 51, 300)
	r = history(t, b, "user:many", channels.HistoryOptions{Since: &channels.Position{Offset: 20, Epoch: r.Epoch}, MaxBytes: 1 << 20})
	assertOffsets(t, r.Publications, 21, 300)
	// data(i) for i in 1..300 is `{"n":i}`: 7, 8 or 9 bytes.
	r = history(t, b, "user:many", channels.HistoryOptions{Since: &channels.Position{Offset: 100, Epoch: r.Epoch}, MaxBytes: 9 * 150})
	assertOffsets(t, r.Publications, 101, 251)
}

func testSize(t *testing.T, f Factory) {
	b, _ := start(t, f, Options{HistorySize: 5})
	for i := 1; i <= 12; i++ {
		publish(t, b, "user:s", i)
	}
	r := history(t, b, "user:s", channels.HistoryOptions{Limit: 100})
	assertOffsets(t, r.Publications, 8, 12)
	if r.Earliest != 8 {
		t.Fatalf("earliest %d, want 8", r.Earliest)
	}
	if ok, reason := r.Recover(channels.Position{Offset: 3, Epoch: r.Epoch}); ok || reason != channels.ReasonOffsetExpired {
		t.Fatalf("recover from trimmed offset: %v %q", ok, reason)
	}
	if ok, _ := r.Recover(channels.Position{Offset: 7, Epoch: r.Epoch}); !ok {
		t.Fatal("recover from the offset just before earliest refused")
	}
}

func testTTL(t *testing.T, f Factory) {
	b, _ := start(t, f, Options{HistoryTTL: 300 * time.Millisecond})
	for i := 1; i <= 3; i++ {
		publish(t, b, "user:t", i)
	}
	epoch := history(t, b, "user:t", channels.HistoryOptions{}).Epoch
	deadline := time.Now().Add(5 * time.Second)
	for {
		r := history(t, b, "user:t", channels.HistoryOptions{Limit: 10})
		if len(r.Publications) == 0 {
			if r.Offset != 3 || r.Epoch != epoch || r.Earliest != 4 {
				t.Fatalf("after TTL the log lost its position: %+v (epoch was %q)", r, epoch)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("publications kept past their TTL: %d", len(r.Publications))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if p := publish(t, b, "user:t", 4); p.Offset != 4 || p.Epoch != epoch {
		t.Fatalf("publish after TTL: %+v", p)
	}
}

func testIdempotency(t *testing.T, f Factory) {
	b, _ := start(t, f, Options{})
	opts := channels.PublishOptions{IdempotencyKey: "k1", IdempotencyTTL: time.Hour}
	first, err := b.Publish(ctx(t), "user:i", data(1), opts)
	if err != nil {
		t.Fatal(err)
	}
	publish(t, b, "user:i", 2)
	again, err := b.Publish(ctx(t), "user:i", data(1), opts)
	if err != nil {
		t.Fatal(err)
	}
	if !again.Duplicate || again.Offset != first.Offset || again.Epoch != first.Epoch || first.Duplicate {
		t.Fatalf("first %+v, again %+v", first, again)
	}
	other, err := b.Publish(ctx(t), "user:j", data(1), opts)
	if err != nil || other.Duplicate {
		t.Fatalf("key leaked across channels: %+v %v", other, err)
	}
	if r := history(t, b, "user:i", channels.HistoryOptions{Limit: 10}); r.Offset != 2 {
		t.Fatalf("duplicate appended: top %d", r.Offset)
	}
	// Short, yet long enough for the checks below on a loaded machine.
	short := channels.PublishOptions{IdempotencyKey: "k2", IdempotencyTTL: 3 * time.Second}
	if _, err := b.Publish(ctx(t), "user:i", data(3), short); err != nil {
		t.Fatal(err)
	}
	d, ok := b.(channels.Deduplicator)
	if !ok {
		t.Fatalf("%T is not a channels.Deduplicator", b)
	}
	seen := func(ch, key string, want bool) {
		t.Helper()
		if got, err := d.Seen(ctx(t), ch, key); err != nil || got != want {
			t.Errorf("Seen(%s, %s) = %v, %v; want %v", ch, key, got, err, want)
		}
	}
	seen("user:i", "k2", true) // first: its TTL is short
	seen("user:i", "k1", true)
	seen("user:j", "k1", true)
	seen("user:i", "k9", false)
	seen("user:nowhere", "k1", false)
	time.Sleep(3 * time.Second)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		got, err := d.Seen(ctx(t), "user:i", "k2")
		if err != nil {
			t.Fatal(err)
		}
		if !got {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("key k2 outlived its 3 s TTL by 10 s")
		}
	}
	if r, err := b.Publish(ctx(t), "user:i", data(3), short); err != nil || r.Duplicate {
		t.Fatalf("key outlived its TTL: %+v %v", r, err)
	}
}

func testLive(t *testing.T, f Factory) {
	b, rec := start(t, f, Options{})
	if err := b.Subscribe(ctx(t), "user:l"); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 50; i++ {
		publish(t, b, "user:l", i)
	}
	got := rec.Wait(t, "user:l", 50)
	assertOffsets(t, got, 1, 50)
	for i, p := range got {
		if string(p.Data) != string(data(i+1)) {
			t.Fatalf("live data %d: %s", i, p.Data)
		}
	}
}

func testConcurrent(t *testing.T, f Factory) {
	b, _ := start(t, f, Options{HistorySize: 1000})
	var wg sync.WaitGroup
	seen := make(chan uint64, 400)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				r, err := b.Publish(context.Background(), "user:c", data(i), channels.PublishOptions{})
				if err != nil {
					t.Error(err)
					return
				}
				seen <- r.Offset
			}
		}()
	}
	wg.Wait()
	close(seen)
	got := map[uint64]bool{}
	for o := range seen {
		if got[o] {
			t.Fatalf("offset %d given twice", o)
		}
		got[o] = true
	}
	for o := uint64(1); o <= 400; o++ {
		if !got[o] {
			t.Fatalf("offset %d never given", o)
		}
	}
	assertOffsets(t, history(t, b, "user:c", channels.HistoryOptions{Limit: 1000}).Publications, 1, 400)
}

func testData(t *testing.T, f Factory) {
	b, _ := start(t, f, Options{})
	want := `{"amount":"0.0623414132","fee":2.00,"big":123456789012345678.123456789,"s":"é\u2028"}`
	if _, err := b.Publish(ctx(t), "user:d", json.RawMessage(want), channels.PublishOptions{}); err != nil {
		t.Fatal(err)
	}
	r := history(t, b, "user:d", channels.HistoryOptions{Limit: 1})
	if len(r.Publications) != 1 || string(r.Publications[0].Data) != want {
		t.Fatalf("data changed: %s", r.Publications[0].Data)
	}
}

func assertOffsets(t *testing.T, pubs []channels.Publication, from, to uint64) {
	t.Helper()
	if to < from {
		if len(pubs) != 0 {
			t.Fatalf("got %d publications, want none", len(pubs))
		}
		return
	}
	if uint64(len(pubs)) != to-from+1 {
		t.Fatalf("got %d publications, want offsets %d..%d", len(pubs), from, to)
	}
	for i, p := range pubs {
		if p.Offset != from+uint64(i) {
			t.Fatalf("publication %d has offset %d, want %d", i, p.Offset, from+uint64(i))
		}
	}
}
