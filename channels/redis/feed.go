package redis

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"herald/channels"
)

// feed is this node's live subscription to one channel.
type feed struct {
	channel string

	// shard carries the feed; moving says a move is under way (one at a
	// time, so that two cannot leave the feed on two shards). Both are
	// guarded by Broker.mu.
	shard  *shard
	moving bool
	// waiters are Subscribe calls waiting for Redis to confirm; guarded by
	// the shard's mu.
	waiters []chan struct{}

	// mu serialises delivery and backfill for the channel; the fields
	// below are the position of the last publication handed on.
	mu    sync.Mutex
	known bool
	epoch string
	last  uint64
	// lastData is the data of publication last, when the feed handed it
	// on: a re-read compares it with what the log holds there now.
	lastData []byte
	// left is the epoch the feed moved on from: its late messages are
	// dropped even when the log cannot be read to tell.
	left string
	// resync: the feed was interrupted; re-read the log on confirmation,
	// or in Subscribe if its position was not known yet.
	resync bool
	// failed: the last re-read of the log failed, and retrying says one
	// is due (after retries failures in a row; see retryLater).
	failed   bool
	retrying bool
	retries  int
	// gone: the feed was dropped; a retry due finds nothing to do.
	gone atomic.Bool
}

// Subscribe implements channels.Broker: it returns once Redis confirmed the
// subscription, so every publication appended afterwards reaches the
// handler.
func (b *Broker) Subscribe(ctx context.Context, ch string) error {
	b.mu.Lock()
	if b.closed || b.handler == nil {
		b.mu.Unlock()
		return fmt.Errorf("redis subscribe: %w: broker not running", channels.ErrUnavailable)
	}
	f := &feed{channel: ch}
	b.feeds[ch] = f
	b.mu.Unlock()

	var confirmed <-chan struct{}
	for confirmed == nil {
		s, err := b.shardFor(ctx, ch)
		if err != nil {
			b.drop(f)
			return err
		}
		confirmed = s.add(ctx, f) // nil: the shard was retiring
	}
	select {
	case <-confirmed:
	case <-ctx.Done():
		b.drop(f)
		return fmt.Errorf("redis subscribe %s: %w: %v", ch, channels.ErrUnavailable, ctx.Err())
	}
	// Learn where the log stands, so that an interruption before the first
	// publication still knows what to re-read, and what the log held
	// there: a re-read after Redis came back from an older state compares
	// it with what the log holds there then.
	top, err := b.History(ctx, ch, channels.HistoryOptions{Limit: 1})
	if err != nil {
		b.drop(f)
		return err
	}
	f.mu.Lock()
	if !f.known || f.epoch != top.Epoch || f.last < top.Offset {
		f.known, f.epoch, f.last, f.lastData = true, top.Epoch, top.Offset, nil
		if n := len(top.Publications); n > 0 && top.Publications[n-1].Offset == top.Offset {
			f.lastData = top.Publications[n-1].Data
		}
	}
	if f.resync {
		// The pub/sub connection broke while the log was being read:
		// what was published meanwhile did not come through it.
		b.backfill(f)
		// Nor may what is published until the replacement connection
		// is subscribed: its confirmation re-reads the log too (if it
		// came already, the next one does, for nothing).
		f.resync = true
	}
	f.mu.Unlock()
	return nil
}

// Unsubscribe implements channels.Broker.
func (b *Broker) Unsubscribe(_ context.Context, ch string) error {
	b.mu.Lock()
	f := b.feeds[ch]
	b.mu.Unlock()
	if f != nil {
		b.drop(f)
	}
	return nil
}

// drop forgets a feed and unsubscribes from its channel.
func (b *Broker) drop(f *feed) {
	f.gone.Store(true)
	b.mu.Lock()
	if b.feeds[f.channel] == f {
		delete(b.feeds, f.channel)
	}
	s := f.shard
	f.shard = nil
	b.mu.Unlock()
	if s != nil {
		s.remove(f, true)
	}
}

// shardFor returns the pub/sub connection that carries ch: the only one on
// a single Redis, the one to the master owning ch's slot on a cluster.
func (b *Broker) shardFor(ctx context.Context, ch string) (*shard, error) {
	addr := ""
	var node *goredis.Client
	if b.cluster != nil {
		n, err := b.cluster.MasterForKey(ctx, feedName(ch))
		if err != nil {
			return nil, unavailable("locating the master of "+ch, err)
		}
		node, addr = n, n.Options().Addr
	} else {
		node = b.client.(*goredis.Client)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, fmt.Errorf("redis: %w: broker closed", channels.ErrUnavailable)
	}
	s := b.shards[addr]
	if s == nil {
		s = newShard(b, addr, node)
		b.shards[addr] = s
		go s.run()
	}
	return s, nil
}

// deliver hands a live publication on in order: duplicates are dropped, a
// gap is filled from the log, and a new epoch is announced. f.mu is held.
func (b *Broker) deliver(f *feed, p channels.Publication) {
	if f.known && p.Epoch != f.epoch {
		// The log's epoch is what the log says, not the message: a
		// message of the epoch before may still come through pub/sub
		// after a read of the log learned the new one. The read announces
		// a new epoch and hands on its publications, p among them.
		switch {
		case !b.backfill(f) && p.Epoch != f.left:
			// The log cannot be read now: take the message's epoch
			// rather than hold it back, and hand it on without another
			// read (the hub announces any gap before it).
			b.handler.HandleReset(f.channel, channels.Position{Offset: 0, Epoch: p.Epoch}, channels.ReasonEpochMismatch)
			f.left, f.epoch = f.epoch, p.Epoch
			b.handler.HandlePublication(f.channel, p)
			f.last, f.lastData = p.Offset, p.Data
			return
		case p.Epoch != f.epoch:
			return
		}
	}
	if f.known {
		if p.Offset <= f.last {
			return
		}
		if p.Offset > f.last+1 {
			b.backfill(f)
			if p.Offset <= f.last {
				return
			}
		}
	}
	b.handler.HandlePublication(f.channel, p)
	f.known, f.epoch, f.last, f.lastData = true, p.Epoch, p.Offset, p.Data
}

// backfill re-reads the log after the last delivered publication and hands
// on what the live feed missed, announcing what the log no longer has. It
// reads a page of at most backfillBytes at a time, so that a long gap on a
// channel of large publications is never held whole. It reports whether
// it read the log's epoch (false: the log could not be read at all).
// f.mu is held.
func (b *Broker) backfill(f *feed) bool {
	learned := false
	for {
		since := channels.Position{Offset: f.last, Epoch: f.epoch}
		res, err := b.historyRetry(f.channel, since, f.lastData)
		if err != nil {
			// Redis answers pub/sub but not reads: try again later, and
			// meanwhile hand on live publications, after a gap the hub
			// announces.
			b.log.Error("redis backfill failed; retrying", "channel_namespace", namespace(f.channel), "err", err)
			f.resync = true
			b.retryLater(f)
			return learned
		}
		learned = true
		if res.Epoch != f.epoch {
			b.handler.HandleReset(f.channel, channels.Position{Offset: 0, Epoch: res.Epoch}, channels.ReasonEpochMismatch)
			f.left, f.epoch, f.last, f.lastData = f.epoch, res.Epoch, 0, nil
			since = channels.Position{Offset: 0, Epoch: res.Epoch}
			if res, err = b.historyRetry(f.channel, since, nil); err != nil {
				f.resync = true
				b.retryLater(f)
				return learned
			}
		}
		if ok, reason := res.Recover(since); !ok && res.Epoch == f.epoch {
			f.last, f.lastData = res.Earliest-1, nil
			b.handler.HandleReset(f.channel, channels.Position{Offset: f.last, Epoch: f.epoch}, reason)
		}
		for _, p := range res.Publications {
			if p.Offset > f.last {
				b.handler.HandlePublication(f.channel, p)
				f.last, f.lastData = p.Offset, p.Data
			}
		}
		if len(res.Publications) == 0 || f.last >= res.Offset {
			break
		}
	}
	f.resync, f.failed, f.retries = false, false, 0
	return true
}

// retryLater has the log re-read again after a failed re-read, about 1 s
// later and twice as long after each failure in a row, up to 30 s (each
// feed at its own moment: they all failed together), while the feed and
// the broker last: on a quiet channel no later publication would show the
// gap. f.mu is held.
func (b *Broker) retryLater(f *feed) {
	f.failed = true
	if f.retrying {
		return
	}
	f.retrying = true
	delay := min(time.Second<<min(f.retries, 5), 30*time.Second)
	f.retries++
	time.AfterFunc(delay/2+rand.N(delay/2), func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.retrying = false
		select {
		case <-b.stop:
			return
		default:
		}
		if f.gone.Load() || !f.failed {
			return
		}
		b.backfill(f)
		// A re-read due on the next confirmation stays due (its caller
		// set resync with failed): a connection not yet subscribed misses
		// what is published before it is.
		f.resync = true
	})
}

// backfillBytes bounds one page of a backfill.
const backfillBytes = 4 << 20

// historyRetry reads the log after since, the feed's own position whose
// data it handed on was sinceData (nil: unknown), retrying briefly: a
// backfill usually runs right after Redis came back.
func (b *Broker) historyRetry(ch string, since channels.Position, sinceData []byte) (channels.HistoryResult, error) {
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		if attempt > 0 {
			time.Sleep(time.Duration(attempt) * 100 * time.Millisecond)
		}
		ctx, cancel := context.WithTimeout(context.Background(), b.opts.Timeout)
		var res channels.HistoryResult
		res, err = b.history(ctx, ch, channels.HistoryOptions{Since: &since, MaxBytes: backfillBytes}, true, sinceData)
		cancel()
		if err == nil || !errors.Is(err, channels.ErrUnavailable) {
			return res, err
		}
	}
	return channels.HistoryResult{}, err
}

func namespace(ch string) string {
	for i := 0; i < len(ch); i++ {
		if ch[i] == ':' {
			return ch[:i]
		}
	}
	return ch
}
