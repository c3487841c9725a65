package redis

import (
	"context"
	"fmt"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"herald/channels"
)

// shard is one sharded pub/sub connection, to one Redis master, carrying
// every feed whose channel that master owns. Its goroutine (run) owns the
// connection: it subscribes, receives, pings, and on any trouble throws the
// connection away, makes a new one, and has every feed re-read its log.
type shard struct {
	b    *Broker
	addr string
	node *goredis.Client

	mu       sync.Mutex
	ps       *goredis.PubSub // nil while reconnecting
	feeds    map[string]*feed
	leaving  map[string]int // our own SUNSUBSCRIBEs not yet confirmed
	lastSeen time.Time      // last message or pong on the current connection
	stopping bool

	stop chan struct{}
	done chan struct{}
}

func newShard(b *Broker, addr string, node *goredis.Client) *shard {
	return &shard{b: b, addr: addr, node: node, feeds: make(map[string]*feed), leaving: make(map[string]int),
		stop: make(chan struct{}), done: make(chan struct{})}
}

// add registers a feed and returns a channel closed when Redis confirms
// its subscription, or nil when the shard is closing (look it up again).
// A feed dropped meanwhile (an Unsubscribe racing a move) is not
// registered, and there is nothing to wait for.
func (s *shard) add(ctx context.Context, f *feed) <-chan struct{} {
	confirmed := make(chan struct{})
	// Both locks, so that drop, which forgets the feed under b.mu and
	// then removes it from f.shard, either comes first and is seen here,
	// or comes after and finds the feed on this shard.
	s.b.mu.Lock()
	if s.b.feeds[f.channel] != f {
		s.b.mu.Unlock()
		close(confirmed)
		return confirmed
	}
	s.mu.Lock()
	if s.stopping {
		s.mu.Unlock()
		s.b.mu.Unlock()
		return nil
	}
	f.shard = s
	s.feeds[f.channel] = f
	f.waiters = append(f.waiters, confirmed)
	ps := s.ps
	s.mu.Unlock()
	s.b.mu.Unlock()
	if ps != nil {
		// An error here means the connection broke; run notices and
		// subscribes every feed again on the next one.
		_ = ps.SSubscribe(ctx, feedName(f.channel))
	}
	return confirmed
}

// remove forgets a feed; unsubscribe says whether to tell Redis (not when
// Redis itself dropped the subscription).
//
// Only f's own subscription is ended: when the shard carries another feed
// of the channel now (the channel was left and joined again meanwhile),
// that one's subscription is the same one in Redis, and stays.
func (s *shard) remove(f *feed, unsubscribe bool) {
	s.mu.Lock()
	ours := s.feeds[f.channel] == f
	if ours {
		delete(s.feeds, f.channel)
	}
	unsubscribe = unsubscribe && ours && s.ps != nil
	ps := s.ps
	if unsubscribe {
		s.leaving[f.channel]++
	}
	s.mu.Unlock()
	if unsubscribe {
		ctx, cancel := context.WithTimeout(context.Background(), s.b.opts.Timeout)
		_ = ps.SUnsubscribe(ctx, feedName(f.channel))
		cancel()
	}
}

func (s *shard) close() {
	s.mu.Lock()
	if s.stopping {
		s.mu.Unlock()
		return
	}
	s.stopping = true
	close(s.stop)
	ps := s.ps
	s.mu.Unlock()
	if ps != nil {
		_ = ps.Close()
	}
	<-s.done
}

// healthy reports whether the connection is up and answered recently.
func (s *shard) healthy() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ps == nil {
		return fmt.Errorf("redis pub/sub to %s: %w: reconnecting", s.addrName(), channels.ErrUnavailable)
	}
	if since := time.Since(s.lastSeen); since > 3*s.b.opts.HealthInterval {
		return fmt.Errorf("redis pub/sub to %s: %w: silent for %v", s.addrName(), channels.ErrUnavailable, since.Round(time.Millisecond))
	}
	return nil
}

func (s *shard) addrName() string {
	if s.addr == "" {
		return "redis"
	}
	return s.addr
}

// run keeps a connection alive until the shard is closed.
func (s *shard) run() {
	defer close(s.done)
	backoff := 50 * time.Millisecond
	for {
		start := time.Now()
		err := s.session()
		select {
		case <-s.stop:
			return
		default:
		}
		s.b.log.Warn("redis pub/sub interrupted; re-subscribing and re-reading its channels", "redis", s.addrName(), "err", err)
		if time.Since(start) > 10*time.Second {
			backoff = 50 * time.Millisecond
		}
		select {
		case <-s.stop:
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
		if s.b.cluster != nil {
			s.relocate()
			if s.retire() {
				return
			}
		}
	}
}

// retire ends a cluster shard that carries no feeds any more (its master
// failed over or lost its slots, or its channels' subscribers left), so it
// no longer counts for readiness. A connection still up is closed.
func (s *shard) retire() bool {
	s.b.mu.Lock()
	s.mu.Lock()
	if len(s.feeds) > 0 || s.stopping {
		s.mu.Unlock()
		s.b.mu.Unlock()
		return false
	}
	if s.b.shards[s.addr] == s {
		delete(s.b.shards, s.addr)
	}
	s.stopping = true
	close(s.stop)
	ps := s.ps
	s.mu.Unlock()
	s.b.mu.Unlock()
	if ps != nil {
		_ = ps.Close()
	}
	return true
}

// session runs one connection: subscribe every feed, then receive until
// an error, a silence longer than three health intervals, or close.
func (s *shard) session() error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ps := s.node.SSubscribe(ctx)
	defer ps.Close()

	s.mu.Lock()
	if s.stopping {
		s.mu.Unlock()
		return nil
	}
	s.ps = ps
	s.lastSeen = time.Now()
	names := make([]string, 0, len(s.feeds))
	for ch := range s.feeds {
		names = append(names, feedName(ch))
	}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.ps = nil
		clear(s.leaving)
		s.mu.Unlock()
		s.interrupted()
	}()

	if err := ps.Ping(ctx); err != nil {
		return err
	}
	// One SSUBSCRIBE per channel: a cluster refuses several channels of
	// different slots in one command (CROSSSLOT).
	for _, name := range names {
		if err := ps.SSubscribe(ctx, name); err != nil {
			return err
		}
	}
	pingErr := make(chan error, 1)
	go s.pinger(ctx, ps, pingErr)
	for {
		msg, err := ps.ReceiveTimeout(ctx, 3*s.b.opts.HealthInterval)
		if err != nil {
			return err
		}
		select {
		case err := <-pingErr:
			return err
		default:
		}
		s.mu.Lock()
		s.lastSeen = time.Now()
		s.mu.Unlock()
		switch m := msg.(type) {
		case *goredis.Message:
			s.message(m)
		case *goredis.Subscription:
			switch m.Kind {
			case "ssubscribe":
				s.confirmed(m.Channel)
			case "sunsubscribe":
				s.dropped(m.Channel)
			}
		}
	}
}

// pinger pings the connection so that a dead one is noticed: the pong, like
// any message, resets the receive timeout.
func (s *shard) pinger(ctx context.Context, ps *goredis.PubSub, errs chan<- error) {
	t := time.NewTicker(s.b.opts.HealthInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := ps.Ping(ctx); err != nil && ctx.Err() == nil {
				errs <- err
				return
			}
		}
	}
}

// snapshot returns the shard's feeds as they are now.
func (s *shard) snapshot() []*feed {
	s.mu.Lock()
	defer s.mu.Unlock()
	feeds := make([]*feed, 0, len(s.feeds))
	for _, f := range s.feeds {
		feeds = append(feeds, f)
	}
	return feeds
}

// interrupted marks every feed for a re-read: whatever was published while
// the connection was down never reached us.
func (s *shard) interrupted() {
	feeds := s.snapshot()
	for _, f := range feeds {
		f.mu.Lock()
		// A feed whose position is not known yet (Subscribe is between
		// the confirmation and reading the log) is re-read by Subscribe.
		f.resync = true
		f.mu.Unlock()
	}
}

// confirmed releases the Subscribe calls waiting for ch and, after an
// interruption, re-reads the log from the last delivered offset.
func (s *shard) confirmed(name string) {
	ch, ok := channelOf(name)
	if !ok {
		return
	}
	s.mu.Lock()
	f := s.feeds[ch]
	var waiters []chan struct{}
	if f != nil {
		waiters, f.waiters = f.waiters, nil
	}
	s.mu.Unlock()
	if f == nil {
		return
	}
	f.mu.Lock()
	if f.resync && f.known {
		s.b.backfill(f)
	}
	f.mu.Unlock()
	for _, w := range waiters {
		close(w)
	}
}

// dropped handles Redis ending a subscription we did not end: on a
// cluster, the channel's slot moved to another master.
func (s *shard) dropped(name string) {
	ch, ok := channelOf(name)
	if !ok {
		return
	}
	s.mu.Lock()
	if s.leaving[ch] > 0 {
		// The confirmation of our own Unsubscribe.
		if s.leaving[ch]--; s.leaving[ch] == 0 {
			delete(s.leaving, ch)
		}
		s.mu.Unlock()
		return
	}
	f := s.feeds[ch]
	s.mu.Unlock()
	if f != nil {
		go s.b.move(f, s, true)
	}
}

func (s *shard) message(m *goredis.Message) {
	ch, ok := channelOf(m.Channel)
	if !ok {
		return
	}
	s.mu.Lock()
	f := s.feeds[ch]
	s.mu.Unlock()
	if f == nil {
		return
	}
	p, err := parseMessage(m.Payload)
	if err != nil {
		s.b.log.Error("redis pub/sub: unreadable message", "err", err)
		return
	}
	f.mu.Lock()
	s.b.deliver(f, p)
	f.mu.Unlock()
}

// relocate moves the shard's feeds whose slots another master now owns,
// as far as the client's map of the cluster knows, and reports how many.
func (s *shard) relocate() int {
	ctx, cancel := context.WithTimeout(context.Background(), s.b.opts.Timeout)
	defer cancel()
	s.b.cluster.ReloadState(ctx)
	feeds := s.snapshot()
	moved := 0
	for _, f := range feeds {
		n, err := s.b.cluster.MasterForKey(ctx, feedName(f.channel))
		if err == nil && n.Options().Addr != s.addr {
			moved++
			go s.b.move(f, s, false)
		}
	}
	return moved
}

// watchTopology keeps a cluster node's feeds on the masters that serve
// their channels. Redis tells a subscriber when its channel's slot leaves
// a master, and move follows at once; but the client's map of the cluster
// is reloaded in the background and may still name the old master then,
// and a replica (a failed-over master) takes a sharded subscription and
// may never pass it a publication. Every few seconds a feed on the wrong
// node, as the map has it then, is moved, its log re-read on arrival; a
// shard left without feeds is closed. The reload each tick asks for runs
// in the background, so a tick acts on the map the one before reloaded.
func (b *Broker) watchTopology() {
	t := time.NewTicker(topologyInterval * b.opts.HealthInterval)
	defer t.Stop()
	for {
		select {
		case <-b.stop:
			return
		case <-t.C:
		}
		for _, f := range b.orphans() {
			b.log.Warn("redis: a channel's feed is on no pub/sub connection (a move failed); moving it again", "channel_namespace", namespace(f.channel))
			go b.move(f, f.shard, false)
		}
		for _, s := range b.allShards() {
			if n := s.relocate(); n > 0 {
				b.log.Warn("redis: channels were subscribed on a node that no longer serves them; moved, and their logs re-read",
					"redis", s.addrName(), "channels", n)
			}
			s.retire()
		}
	}
}

// orphans returns the feeds no shard carries, though Subscribe placed
// them: a move that gave up left them so.
func (b *Broker) orphans() []*feed {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []*feed
	for _, f := range b.feeds {
		// No shard yet: Subscribe is placing it.
		if f.shard == nil || f.moving {
			continue
		}
		f.shard.mu.Lock()
		carried := f.shard.feeds[f.channel] == f
		f.shard.mu.Unlock()
		if !carried {
			out = append(out, f)
		}
	}
	return out
}

// topologyInterval is watchTopology's period in health intervals.
const topologyInterval = 5

// move re-homes a feed that from carries on the shard of its channel's
// current master, and re-reads its log there. dropped says that Redis
// ended the subscription on from: from's master no longer serves the
// channel, so the move waits, a little, for the client's map of the
// cluster to name another. Otherwise from's subscription, if its
// connection is up, is ended here.
func (b *Broker) move(f *feed, from *shard, dropped bool) {
	b.mu.Lock()
	if b.feeds[f.channel] != f || f.moving || f.shard != from {
		// Gone, being moved, or moved already: a move under way goes
		// where the map says now, and watchTopology corrects it if that
		// was wrong.
		b.mu.Unlock()
		return
	}
	f.moving = true
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		f.moving = false
		b.mu.Unlock()
	}()
	from.remove(f, !dropped)
	f.mu.Lock()
	// Re-read on the new shard's confirmation, or, if Subscribe has not
	// read the log yet, in Subscribe.
	f.resync = true
	f.mu.Unlock()
	if dropped && b.cluster != nil {
		b.awaitNewMaster(f.channel, from.addr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), b.opts.Timeout)
	defer cancel()
	for attempt := 0; attempt < 10; attempt++ {
		s, err := b.shardFor(ctx, f.channel)
		if err == nil && s.add(ctx, f) != nil {
			return
		}
		if ctx.Err() != nil || b.isClosed() {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if b.isClosed() {
		return
	}
	b.log.Error("redis: cannot re-home a channel's feed; trying again in a few seconds", "channel_namespace", namespace(f.channel))
}

// awaitNewMaster waits, at most the broker's timeout, until the client's
// map of the cluster names a master for ch other than from, which dropped
// ch's subscription. If it never does (the slot came back, or the map
// cannot be loaded), the feed goes where the map says, and watchTopology
// corrects it later if need be. (The other moves come from relocate and
// watchTopology, on the map they ask to be reloaded each time.)
func (b *Broker) awaitNewMaster(ch, from string) {
	ctx, cancel := context.WithTimeout(context.Background(), b.opts.Timeout)
	defer cancel()
	for {
		b.cluster.ReloadState(ctx)
		n, err := b.cluster.MasterForKey(ctx, feedName(ch))
		if err == nil && n.Options().Addr != from {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-b.stop:
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
}
