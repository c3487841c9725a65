package redis

import (
	"context"
	"errors"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"herald/channels"
)

// PerChannelAppender is the Appender a Redis Cluster gets, on any broker:
// one script per channel, each ranking in its own copy of the sequence.
func PerChannelAppender(b *Broker) channels.Appender { return appender{b: b, perChannel: true} }

// Misplace moves ch's feed onto a pub/sub connection to addr, as a move
// made on a stale map of the cluster would, and waits for Redis to
// confirm the subscription there.
func Misplace(b *Broker, ch, addr string) error {
	b.mu.Lock()
	f := b.feeds[ch]
	old := f.shard
	s := b.shards[addr]
	if s == nil {
		s = newShard(b, addr, goredis.NewClient(&goredis.Options{Addr: addr}))
		b.shards[addr] = s
		go s.run()
	}
	b.mu.Unlock()
	old.remove(f, true)
	confirmed := s.add(context.Background(), f)
	if confirmed == nil {
		return errors.New("the shard is closing")
	}
	select {
	case <-confirmed:
		return nil
	case <-time.After(10 * time.Second):
		return errors.New("no confirmation within 10 s")
	}
}

// RejoinThenRemoveOld leaves ch and joins it again, then has the shard
// remove the old feed, as a check working from a snapshot taken before
// would.
func RejoinThenRemoveOld(ctx context.Context, b *Broker, ch string) error {
	b.mu.Lock()
	old := b.feeds[ch]
	s := old.shard
	b.mu.Unlock()
	if err := b.Unsubscribe(ctx, ch); err != nil {
		return err
	}
	if err := b.Subscribe(ctx, ch); err != nil {
		return err
	}
	s.remove(old, true)
	return nil
}

// Orphan takes ch's feed off its shard, without unsubscribing, as a move
// that gave up leaves it.
func Orphan(b *Broker, ch string) {
	b.mu.Lock()
	f := b.feeds[ch]
	b.mu.Unlock()
	f.shard.remove(f, false)
}
