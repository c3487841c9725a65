// Package memory is the embedded, single-node channel broker: every channel
// log lives in this process and is gone when it stops. It is the default
// when no Redis is configured and what `herald --dev` runs on.
package memory

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"sync"
	"time"

	"herald/channels"
)

// Options configure a Broker. Zero values take the defaults in brackets.
type Options struct {
	// HistorySize is how many publications each log keeps [1000].
	HistorySize int
	// HistoryTTL is how long publications are kept after the channel's last
	// publication [24h].
	HistoryTTL time.Duration
	// MetaTTL is how long a log's offset and epoch outlive its last
	// activity; after that the channel starts again in a new epoch [30 days,
	// and never less than twice HistoryTTL, so that a client back after
	// its history expired learns offset_expired, not a new epoch; nor less
	// than IdempotencyTTL: the log holds the channel's idempotency keys
	// too].
	MetaTTL time.Duration
	// IdempotencyTTL is the default time an idempotency key is remembered [72h].
	IdempotencyTTL time.Duration
	// Now is the clock [time.Now].
	Now func() time.Time
}

func (o *Options) setDefaults() {
	if o.HistorySize <= 0 {
		o.HistorySize = 1000
	}
	if o.HistoryTTL <= 0 {
		o.HistoryTTL = 24 * time.Hour
	}
	if o.MetaTTL <= 0 {
		o.MetaTTL = 30 * 24 * time.Hour
	}
	if o.IdempotencyTTL <= 0 {
		o.IdempotencyTTL = 72 * time.Hour
	}
	o.MetaTTL = max(o.MetaTTL, 2*o.HistoryTTL, o.IdempotencyTTL)
	if o.Now == nil {
		o.Now = time.Now
	}
}

// Broker is an in-memory channels.Broker.
type Broker struct {
	opts Options

	mu       sync.RWMutex
	chans    map[string]*log
	handler  channels.Handler
	closed   bool
	stop     chan struct{}
	sweeping sync.WaitGroup
}

var _ channels.Broker = (*Broker)(nil)

// New returns a broker; call Start before publishing.
func New(opts Options) *Broker {
	opts.setDefaults()
	return &Broker{opts: opts, chans: make(map[string]*log), stop: make(chan struct{})}
}

// log is one channel. Its mutex orders appends and their delivery to the
// handler, so that readers and subscribers see one sequence.
type log struct {
	mu       sync.Mutex
	epoch    string
	top      uint64
	pubs     ring
	lastPub  time.Time // last publication, for HistoryTTL
	lastUsed time.Time // last activity of any kind, for MetaTTL
	keys     map[string]idem
	dead     bool // swept away; look the channel up again
}

type idem struct {
	pos     channels.Position
	expires time.Time
}

// Start implements channels.Broker.
func (b *Broker) Start(h channels.Handler) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.handler != nil {
		return errors.New("memory broker: already started")
	}
	b.handler = h
	b.sweeping.Add(1)
	go b.sweep()
	return nil
}

// Ready implements channels.Broker; the embedded broker is ready while open.
func (b *Broker) Ready(context.Context) error {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed {
		return channels.ErrUnavailable
	}
	return nil
}

// Close stops background work. Later calls fail with ErrUnavailable.
func (b *Broker) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	close(b.stop)
	b.mu.Unlock()
	b.sweeping.Wait()
	return nil
}

// Subscribe implements channels.Broker. Every append is handed to the
// handler anyway (there is only this node), so there is nothing to do.
func (b *Broker) Subscribe(context.Context, string) error { return b.Ready(context.Background()) }

// Unsubscribe implements channels.Broker.
func (b *Broker) Unsubscribe(context.Context, string) error { return nil }

// channel returns the log for name, creating it (with a new epoch) when
// needed. The returned log is locked.
func (b *Broker) channel(name string) (*log, error) {
	for {
		l, err := b.lookup(name)
		if err != nil || !l.dead {
			return l, err
		}
		l.mu.Unlock()
	}
}

func (b *Broker) lookup(name string) (*log, error) {
	b.mu.RLock()
	l, ok := b.chans[name]
	closed := b.closed
	b.mu.RUnlock()
	if closed {
		return nil, channels.ErrUnavailable
	}
	if !ok {
		b.mu.Lock()
		if l, ok = b.chans[name]; !ok {
			l = &log{epoch: newEpoch(), pubs: newRing(b.opts.HistorySize), keys: make(map[string]idem)}
			b.chans[name] = l
		}
		b.mu.Unlock()
	}
	l.mu.Lock()
	if !l.dead {
		now := b.opts.Now()
		b.expire(l, now)
		l.lastUsed = now
	}
	return l, nil
}

// expire drops publications older than HistoryTTL; l is locked.
func (b *Broker) expire(l *log, now time.Time) {
	if l.pubs.len() > 0 && now.Sub(l.lastPub) > b.opts.HistoryTTL {
		l.pubs.clear()
	}
}

// Seen implements channels.Deduplicator.
func (b *Broker) Seen(_ context.Context, channel, key string) (bool, error) {
	b.mu.RLock()
	l, ok := b.chans[channel]
	b.mu.RUnlock()
	if !ok {
		return false, nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	k, ok := l.keys[key]
	return ok && !l.dead && b.opts.Now().Before(k.expires), nil
}

// Publish implements channels.Broker.
func (b *Broker) Publish(ctx context.Context, channel string, data json.RawMessage, opts channels.PublishOptions) (channels.PublishResult, error) {
	if err := ctx.Err(); err != nil {
		return channels.PublishResult{}, err
	}
	l, err := b.channel(channel)
	if err != nil {
		return channels.PublishResult{}, err
	}
	defer l.mu.Unlock()
	now := b.opts.Now()
	if opts.IdempotencyKey != "" {
		if k, ok := l.keys[opts.IdempotencyKey]; ok && now.Before(k.expires) {
			return channels.PublishResult{Position: k.pos, Duplicate: true}, nil
		}
	}
	l.top++
	pub := channels.Publication{Offset: l.top, Epoch: l.epoch, Data: data}
	l.pubs.push(pub)
	l.lastPub = now
	if opts.IdempotencyKey != "" {
		ttl := opts.IdempotencyTTL
		if ttl <= 0 {
			ttl = b.opts.IdempotencyTTL
		}
		l.keys[opts.IdempotencyKey] = idem{pos: channels.Position{Offset: pub.Offset, Epoch: pub.Epoch}, expires: now.Add(ttl)}
	}
	// Delivered under the log's lock: subscribers see appends in order,
	// and a History snapshot is either before or after this publication.
	if h := b.handler; h != nil {
		h.HandlePublication(channel, pub)
	}
	return channels.PublishResult{Position: channels.Position{Offset: pub.Offset, Epoch: pub.Epoch}}, nil
}

// History implements channels.Broker.
func (b *Broker) History(ctx context.Context, channel string, opts channels.HistoryOptions) (channels.HistoryResult, error) {
	if err := ctx.Err(); err != nil {
		return channels.HistoryResult{}, err
	}
	l, err := b.channel(channel)
	if err != nil {
		return channels.HistoryResult{}, err
	}
	defer l.mu.Unlock()
	res := channels.HistoryResult{
		Position: channels.Position{Offset: l.top, Epoch: l.epoch},
		Earliest: l.top + 1 - uint64(l.pubs.len()),
	}
	switch {
	case opts.Since != nil:
		if opts.Since.Epoch != l.epoch || opts.Since.Offset >= l.top {
			return res, nil
		}
		from := max(opts.Since.Offset+1, res.Earliest)
		n := int(l.top - from + 1)
		if opts.Limit > 0 {
			n = min(n, opts.Limit)
		}
		res.Publications = l.pubs.slice(int(from-res.Earliest), n)
	case opts.Limit > 0:
		n := min(opts.Limit, l.pubs.len())
		res.Publications = l.pubs.slice(l.pubs.len()-n, n)
	}
	res.Publications = withinBytes(res.Publications, opts.MaxBytes, opts.Since == nil)
	return res, nil
}

// withinBytes applies HistoryOptions.MaxBytes to pubs, oldest first: it
// keeps them from the selected end (the newest when newest is set) up to
// and including the first that brings their data above maxBytes.
func withinBytes(pubs []channels.Publication, maxBytes int, newest bool) []channels.Publication {
	if maxBytes <= 0 {
		return pubs
	}
	size := 0
	for n := range pubs {
		i := n
		if newest {
			i = len(pubs) - 1 - n
		}
		if size += len(pubs[i].Data); size > maxBytes {
			if newest {
				return pubs[i:]
			}
			return pubs[:i+1]
		}
	}
	return pubs
}

// sweep drops expired publications, idempotency keys and forgotten logs, so
// that memory follows the retention settings rather than the traffic seen.
func (b *Broker) sweep() {
	defer b.sweeping.Done()
	every := min(b.opts.HistoryTTL/4, time.Minute)
	t := time.NewTicker(max(every, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-b.stop:
			return
		case <-t.C:
			b.sweepOnce()
		}
	}
}

func (b *Broker) sweepOnce() {
	now := b.opts.Now()
	type named struct {
		name string
		l    *log
	}
	b.mu.RLock()
	logs := make([]named, 0, len(b.chans))
	for name, l := range b.chans {
		logs = append(logs, named{name, l})
	}
	b.mu.RUnlock()
	// One log at a time, and never holding the broker's lock while waiting
	// for a log's: a log is held through its delivery, which for a large
	// local fan-out takes a while, and every other channel's lookup would
	// wait behind it.
	for _, n := range logs {
		name, l := n.name, n.l
		l.mu.Lock()
		b.expire(l, now)
		for k, v := range l.keys {
			if !now.Before(v.expires) {
				delete(l.keys, k)
			}
		}
		if !l.dead && now.Sub(l.lastUsed) > b.opts.MetaTTL {
			l.dead = true
			b.mu.Lock()
			if b.chans[name] == l {
				delete(b.chans, name)
			}
			b.mu.Unlock()
		}
		l.mu.Unlock()
	}
}

func newEpoch() string {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	return hex.EncodeToString(b[:])
}
