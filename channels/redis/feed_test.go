package redis_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"herald/channels"
	"herald/channels/channelstest"
	"herald/channels/redis"
	"herald/internal/redistest"
)

// handed is what a handler was handed: a publication or a reset.
type handed struct {
	ch    string
	reset bool
	off   uint64
	epoch string
}

// gatedHandler records what it is handed. Armed, it blocks on the next
// event (telling which channel on first) until gate is closed: the
// shard's session is then held inside that channel's delivery.
type gatedHandler struct {
	mu     sync.Mutex
	events []handed
	armed  bool
	first  chan string
	gate   chan struct{}
}

func newGatedHandler() *gatedHandler {
	return &gatedHandler{first: make(chan string, 1), gate: make(chan struct{})}
}

func (h *gatedHandler) record(e handed) {
	h.mu.Lock()
	h.events = append(h.events, e)
	block := h.armed
	h.armed = false
	h.mu.Unlock()
	if block {
		h.first <- e.ch
		<-h.gate
	}
}

func (h *gatedHandler) HandlePublication(ch string, p channels.Publication) {
	h.record(handed{ch: ch, off: p.Offset, epoch: p.Epoch})
}

func (h *gatedHandler) HandleReset(ch string, pos channels.Position, _ string) {
	h.record(handed{ch: ch, reset: true, off: pos.Offset, epoch: pos.Epoch})
}

func (h *gatedHandler) since(mark int) []handed {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]handed(nil), h.events[mark:]...)
}

// startGated runs a broker on srv, its client's commands through hook
// when not nil, handing on to a gatedHandler.
func startGated(t *testing.T, srv *redistest.Server, hook goredis.Hook) (*redis.Broker, *gatedHandler) {
	t.Helper()
	client := goredis.NewClient(&goredis.Options{Addr: srv.Addr()})
	if hook != nil {
		client.AddHook(hook)
	}
	t.Cleanup(func() { client.Close() })
	h := newGatedHandler()
	b := newBroker(t, client, channelstest.Options{}, h).(*redis.Broker)
	t.Cleanup(func() { b.Close() })
	return b, h
}

// onScript runs before, when not nil, ahead of each of the node's script
// calls (its appends and reads of the log); an error from it is the
// call's.
type onScript struct{ before func() error }

func (o onScript) DialHook(next goredis.DialHook) goredis.DialHook { return next }
func (o onScript) ProcessPipelineHook(next goredis.ProcessPipelineHook) goredis.ProcessPipelineHook {
	return next
}
func (o onScript) ProcessHook(next goredis.ProcessHook) goredis.ProcessHook {
	return func(ctx context.Context, cmd goredis.Cmder) error {
		if cmd.Name() == "evalsha" || cmd.Name() == "eval" {
			if err := o.before(); err != nil {
				cmd.SetErr(err)
				return err
			}
		}
		return next(ctx, cmd)
	}
}

// killPubSubOnRead breaks the node's pub/sub connection, once armed, just
// before its next script call: between Subscribe's confirmation and its
// read of the log.
func killPubSubOnRead(srv *redistest.Server, armed *atomic.Bool) onScript {
	return onScript{before: func() error {
		if armed.CompareAndSwap(true, false) {
			_, _ = srv.Do("CLIENT", "KILL", "TYPE", "pubsub")
			time.Sleep(20 * time.Millisecond)
		}
		return nil
	}}
}

// failScripts fails the node's script calls (its reads of the log) while
// armed; pub/sub still works.
func failScripts(armed *atomic.Bool) onScript {
	return onScript{before: func() error {
		if armed.Load() {
			return errors.New("LOADING Redis is loading the dataset in memory")
		}
		return nil
	}}
}

// Subscribe returns once every publication appended afterwards reaches the
// handler, even when the pub/sub connection broke while Subscribe read
// the log: its re-read must not count for the replacement connection,
// which is not subscribed yet.
func TestFeed_SubscribeInterruptedBeforeItsReadMissesNothing(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	var kill atomic.Bool
	b, h := startGated(t, srv, killPubSubOnRead(srv, &kill))
	pub, _ := startGated(t, srv, nil)
	ctx := context.Background()
	if err := b.Subscribe(ctx, "user:warm"); err != nil {
		t.Fatal(err)
	}
	kill.Store(true)
	if err := b.Subscribe(ctx, "user:x"); err != nil {
		t.Fatal(err)
	}
	r, err := pub.Publish(ctx, "user:x", json.RawMessage(`{"n":1}`), channels.PublishOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		for _, e := range h.since(0) {
			if e.ch == "user:x" && !e.reset && e.off == r.Offset {
				return
			}
		}
	}
	t.Errorf("publication %d of user:x, appended after Subscribe returned, never reached the handler: %+v", r.Offset, h.since(0))
}

// After Redis went back to an older state under a node (a failover to a
// replica that lagged), the node's read of the log learns the new epoch;
// a message of the old one still in flight on pub/sub must not switch the
// channel back to it.
func TestFeed_LateMessageOfAnOldEpochIsNoReset(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	b, h := startGated(t, srv, nil)
	ctx := context.Background()
	chans := []string{"user:a", "user:b"}
	for _, ch := range chans {
		if err := b.Subscribe(ctx, ch); err != nil {
			t.Fatal(err)
		}
		for i := 1; i <= 5; i++ {
			if _, err := b.Publish(ctx, ch, json.RawMessage(fmt.Sprintf(`{"n":%d}`, i)), channels.PublishOptions{}); err != nil {
				t.Fatal(err)
			}
		}
	}
	for deadline := time.Now().Add(10 * time.Second); len(h.since(0)) < 10; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("handed on %d of 10 publications", len(h.since(0)))
		}
	}
	// Offsets 4 and 5 are lost, and the node's pub/sub connection breaks.
	for _, ch := range chans {
		for _, cmd := range [][]string{
			{"HSET", "herald:{" + ch + "}:meta", "top", "3"},
			{"XDEL", "herald:{" + ch + "}:log", "4-0", "5-0"},
			{"XSETID", "herald:{" + ch + "}:log", "3-0"},
		} {
			if _, err := srv.Do(cmd...); err != nil {
				t.Fatal(cmd, err)
			}
		}
	}
	h.mu.Lock()
	h.armed = true
	mark := len(h.events)
	h.mu.Unlock()
	if _, err := srv.Do("CLIENT", "KILL", "TYPE", "pubsub"); err != nil {
		t.Fatal(err)
	}
	opened := false
	defer func() {
		if !opened {
			close(h.gate)
		}
	}()
	// The session is held in the re-read of one channel; the other is
	// subscribed again but not yet re-read, and an old-epoch message is
	// published on it.
	other := chans[0]
	if <-h.first == chans[0] {
		other = chans[1]
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		n, err := srv.Do("PUBSUB", "SHARDNUMSUB", "herald:{"+other+"}")
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(n, "\n1") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not subscribed again: %q", other, n)
		}
	}
	if _, err := b.Publish(ctx, other, json.RawMessage(`{"n":104}`), channels.PublishOptions{}); err != nil {
		t.Fatal(err)
	}
	opened = true
	close(h.gate)
	// Wait for the re-read to reset the channel, then for long enough to
	// see a second reset, which is the bug.
	resetSeen := func() bool {
		for _, e := range h.since(mark) {
			if e.ch == other && e.reset {
				return true
			}
		}
		return false
	}
	for deadline := time.Now().Add(10 * time.Second); !resetSeen(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s was never reset after the break", other)
		}
	}
	// A publication after it is handed on after everything before it.
	last, err := b.Publish(ctx, other, json.RawMessage(`{"n":105}`), channels.PublishOptions{})
	if err != nil {
		t.Fatal(err)
	}
	handedOn := func() bool {
		for _, e := range h.since(mark) {
			if e.ch == other && !e.reset && e.off == last.Offset && e.epoch == last.Epoch {
				return true
			}
		}
		return false
	}
	for deadline := time.Now().Add(10 * time.Second); !handedOn(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: publication %d never handed on: %+v", other, last.Offset, h.since(mark))
		}
	}
	epochs := map[string]bool{}
	seen := map[string]bool{}
	for _, e := range h.since(mark) {
		if e.ch != other {
			continue
		}
		if e.reset {
			epochs[e.epoch] = true
			continue
		}
		key := fmt.Sprint(e.epoch, "/", e.off)
		if seen[key] {
			t.Errorf("%s: offset %d of epoch %s handed on twice", other, e.off, e.epoch)
		}
		seen[key] = true
	}
	if len(epochs) != 1 {
		t.Errorf("%s was reset to %d epochs, want the new one alone: %+v", other, len(epochs), h.since(mark))
	}
}

// unreadable runs a node subscribed to user:e whose reads of the log fail
// while fail is armed, and a publishing node beside it.
func unreadable(t *testing.T) (srv *redistest.Server, fail *atomic.Bool, h *gatedHandler, pub *redis.Broker) {
	srv = redistest.Start(t, redistest.Options{})
	fail = new(atomic.Bool)
	b, h := startGated(t, srv, failScripts(fail))
	pub, _ = startGated(t, srv, nil)
	if err := b.Subscribe(context.Background(), "user:e"); err != nil {
		t.Fatal(err)
	}
	return srv, fail, h, pub
}

// A publication of a new epoch while the log cannot be read is still
// handed on, after the new epoch is announced, rather than held back.
func TestFeed_NewEpochWhileTheLogIsUnreadableIsStillDelivered(t *testing.T) {
	srv, fail, h, pub := unreadable(t)
	ctx := context.Background()
	if _, err := pub.Publish(ctx, "user:e", json.RawMessage(`{"n":1}`), channels.PublishOptions{}); err != nil {
		t.Fatal(err)
	}
	// The log is lost (a new epoch comes with the next publication), and
	// the node cannot read it.
	if _, err := srv.Do("DEL", "herald:{user:e}:meta", "herald:{user:e}:log"); err != nil {
		t.Fatal(err)
	}
	fail.Store(true)
	r, err := pub.Publish(ctx, "user:e", json.RawMessage(`{"n":2}`), channels.PublishOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		evs := h.since(0)
		if n := len(evs); n >= 2 && evs[n-2].reset && evs[n-2].epoch == r.Epoch && !evs[n-1].reset && evs[n-1].epoch == r.Epoch && evs[n-1].off == r.Offset {
			return
		}
	}
	t.Errorf("the new epoch's publication %d was not handed on after a reset: %+v", r.Offset, h.since(0))
}

// A late message of the epoch a channel moved on from, arriving while the
// log cannot be read, is not taken for a newer epoch.
func TestFeed_LateMessageOfTheEpochLeftWhileTheLogIsUnreadable(t *testing.T) {
	srv, fail, h, pub := unreadable(t)
	ctx := context.Background()
	old, err := pub.Publish(ctx, "user:e", json.RawMessage(`{"n":1}`), channels.PublishOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Do("DEL", "herald:{user:e}:meta", "herald:{user:e}:log"); err != nil {
		t.Fatal(err)
	}
	next, err := pub.Publish(ctx, "user:e", json.RawMessage(`{"n":2}`), channels.PublishOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		evs := h.since(0)
		if n := len(evs); n > 0 && evs[n-1].epoch == next.Epoch && !evs[n-1].reset {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the new epoch never came: %+v", evs)
		}
	}
	mark := len(h.since(0))
	fail.Store(true)
	if _, err := srv.Do("SPUBLISH", "herald:{user:e}", fmt.Sprintf(`%d:%s:{"n":1}`, old.Offset, old.Epoch)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second) // the node's attempts to read the log
	fail.Store(false)
	last, err := pub.Publish(ctx, "user:e", json.RawMessage(`{"n":3}`), channels.PublishOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		evs := h.since(mark)
		if n := len(evs); n > 0 && evs[n-1].off == last.Offset {
			break
		}
	}
	evs := h.since(mark)
	for _, e := range evs {
		if e.epoch == old.Epoch || e.reset {
			t.Errorf("after the late message of %s: %+v", old.Epoch, evs)
			break
		}
	}
	if len(evs) != 1 || evs[0].off != last.Offset || evs[0].epoch == old.Epoch {
		t.Errorf("want only publication %d of %s: %+v", last.Offset, next.Epoch, evs)
	}
}

// A channel left and joined again is one subscription in Redis: removing
// the old feed from its shard afterwards (a check that worked from an
// older snapshot) must not end the new feed's subscription.
func TestFeed_RemovingAnOldFeedKeepsTheNewOnesSubscription(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	const ch = "user:1"
	b, rec := recordingBroker(t, goredis.NewClient(&goredis.Options{Addr: srv.Addr()}), redis.Options{}, ch)
	if err := redis.RejoinThenRemoveOld(ctx(t), b, ch); err != nil {
		t.Fatal(err)
	}
	r, err := b.Publish(ctx(t), ch, json.RawMessage(`{}`), channels.PublishOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rec.await(t, ch, r.Offset, 5*time.Second)
}

// outage refuses the node's new connections while dials is armed, and
// fails its script calls (counting them) while scripts is.
type outage struct {
	dials, scripts atomic.Bool
	failed         atomic.Int32
}

func (o *outage) DialHook(next goredis.DialHook) goredis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		if o.dials.Load() {
			return nil, errors.New("connection refused")
		}
		return next(ctx, network, addr)
	}
}

func (o *outage) ProcessPipelineHook(next goredis.ProcessPipelineHook) goredis.ProcessPipelineHook {
	return next
}

func (o *outage) ProcessHook(next goredis.ProcessHook) goredis.ProcessHook {
	return onScript{before: func() error {
		if o.scripts.Load() {
			o.failed.Add(1)
			return errors.New("LOADING Redis is loading the dataset in memory")
		}
		return nil
	}}.ProcessHook(next)
}

// A re-read that fails after a reconnect is retried: on a quiet channel
// no later publication would ever show the gap, and what was published
// while the node was away would never reach its subscribers.
func TestFeed_AFailedReReadIsRetried(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	o := &outage{}
	b, h := startGated(t, srv, o)
	pub, _ := startGated(t, srv, nil)
	ctx := context.Background()
	if err := b.Subscribe(ctx, "user:quiet"); err != nil {
		t.Fatal(err)
	}
	// The node is cut off, and misses a publication.
	o.dials.Store(true)
	o.scripts.Store(true)
	if _, err := srv.Do("CLIENT", "KILL", "TYPE", "pubsub"); err != nil {
		t.Fatal(err)
	}
	r, err := pub.Publish(ctx, "user:quiet", json.RawMessage(`{"n":1}`), channels.PublishOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// It reconnects, but its re-read of the log fails (every attempt of
	// it), and then the log is readable again. Nothing more is published.
	o.dials.Store(false)
	for deadline := time.Now().Add(20 * time.Second); o.failed.Load() < 5; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the node's re-read was tried %d times, want 5", o.failed.Load())
		}
	}
	o.scripts.Store(false)
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		for _, e := range h.since(0) {
			if e.ch == "user:quiet" && !e.reset && e.off == r.Offset {
				return
			}
		}
	}
	t.Errorf("publication %d, missed while the node was away, never reached the handler: %+v", r.Offset, h.since(0))
}
