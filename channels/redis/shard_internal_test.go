package redis

import (
	"context"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"herald/channels"
	"herald/internal/redistest"
)

type nothing struct{}

func (nothing) HandlePublication(string, channels.Publication) {}
func (nothing) HandleReset(string, channels.Position, string)  {}

// A move re-homes a feed on another shard while an Unsubscribe drops it:
// whichever comes first, the feed must not stay on a shard that nothing
// will take it off (subscribed in Redis for nobody, and on a cluster
// keeping a shard of a failed master from retiring).
func TestShard_DroppedFeedIsNotAdded(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	client := goredis.NewClient(&goredis.Options{Addr: srv.Addr()})
	t.Cleanup(func() { client.Close() })
	b, err := New(Options{Client: client})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(nothing{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := b.Subscribe(ctx, "user:1"); err != nil {
		t.Fatal(err)
	}
	b.mu.Lock()
	f := b.feeds["user:1"]
	b.mu.Unlock()
	s, err := b.shardFor(ctx, "user:1")
	if err != nil {
		t.Fatal(err)
	}

	// The Unsubscribe first, then the move's add.
	b.drop(f)
	select {
	case <-s.add(ctx, f):
	case <-ctx.Done():
		t.Fatal("add of a dropped feed waits for a confirmation")
	}
	s.mu.Lock()
	kept := s.feeds["user:1"] != nil
	s.mu.Unlock()
	b.mu.Lock()
	shard := f.shard
	b.mu.Unlock()
	if kept || shard != nil {
		t.Errorf("a dropped feed was added to a shard (kept %v, f.shard %p)", kept, shard)
	}
}
