package redis

import (
	"context"

	goredis "github.com/redis/go-redis/v9"

	"herald/channels"
)

// PerChannelAppender is the Appender a Redis Cluster gets, on any broker:
// one script per channel, each ranking in its own copy of the sequence.
func PerChannelAppender(b *Broker) channels.Appender { return appender{b: b, perChannel: true} }

// Misplace moves ch's feed onto a pub/sub connection to addr, as a move
// made on a stale map of the cluster would, and waits for Redis to
// confirm the subscription there.
func Misplace(b *Broker, ch, addr string) {
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
	<-s.add(context.Background(), f)
}
