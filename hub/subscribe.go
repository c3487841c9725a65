package hub

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/coder/websocket"

	"herald/channels"
)

// hubChannel is a channel with local subscribers.
type hubChannel struct {
	name string

	// refs counts the sessions holding the channel; guarded by Hub.mu.
	refs int

	// brokerMu serialises Subscribe and Unsubscribe calls to the broker for
	// this channel; subscribed says whether the broker feeds us.
	brokerMu   sync.Mutex
	subscribed bool

	// mu guards subs and is held while a publication is fanned out, so every
	// subscription sees the channel's publications in order and a resume's
	// merge cannot interleave with them.
	mu   sync.Mutex
	subs map[*subscription]struct{}
}

// subscription is one client's membership in one channel. Its fields are
// guarded by its hubChannel's mu.
type subscription struct {
	c  *client
	hc *hubChannel
	// recovering is set between joining the live feed and finishing the
	// subscribe reply: publications are held in pending meanwhile.
	recovering   bool
	pending      []event
	pendingBytes int
	// epoch and last are the position of the last publication delivered.
	epoch string
	last  uint64
	// gone is set when the subscription ended, and done closed, for a
	// replay in progress.
	gone bool
	done chan struct{}
}

// heldEventSize is what an event held during a recovery costs besides its
// frame: the event itself, on 64-bit machines.
const heldEventSize = 96

// event is a live publication (frame set) or a reset of the channel's log.
type event struct {
	pub    channels.Publication
	frame  []byte
	reset  bool
	reason string
}

// HandlePublication implements channels.Handler: it fans pub out to the
// channel's local subscribers, encoding it once.
func (h *Hub) HandlePublication(channel string, pub channels.Publication) {
	h.mu.RLock()
	hc := h.chans[channel]
	h.mu.RUnlock()
	if hc == nil {
		return
	}
	hc.mu.Lock()
	if len(hc.subs) == 0 {
		hc.mu.Unlock()
		return
	}
	ev := event{pub: pub, frame: pubFrame(channel, pub)}
	delivered := 0
	ready := make([]*client, 0, len(hc.subs))
	for s := range hc.subs {
		if s.deliver(ev, &ready) {
			delivered++
		}
	}
	hc.mu.Unlock()
	writeOut(ready)
	// Once per publication, not per subscriber: the fan-out stays one
	// atomic add away from uninstrumented.
	h.opts.Metrics.Delivered(delivered)
	h.opts.Metrics.FannedOut(pub.Data)
}

// HandleReset implements channels.Handler: subscribers learn of the loss
// through a subscribed frame with recovered:false.
func (h *Hub) HandleReset(channel string, pos channels.Position, reason string) {
	h.mu.RLock()
	hc := h.chans[channel]
	h.mu.RUnlock()
	if hc == nil {
		return
	}
	hc.mu.Lock()
	defer hc.mu.Unlock()
	ev := event{pub: channels.Publication{Offset: pos.Offset, Epoch: pos.Epoch}, reset: true, reason: reason}
	for s := range hc.subs {
		s.deliver(ev, nil)
	}
}

// deliver hands one event to the client, keeping the protocol's promise:
// offsets strictly increase within an epoch, and any gap or change of epoch
// is announced by a subscribed frame with recovered:false. hc.mu is held.
// It reports whether a pub frame was queued. When ready is not nil, a
// client that needs a writer for it is added there rather than given one
// (see writeOut).
func (s *subscription) deliver(ev event, ready *[]*client) bool {
	if s.recovering {
		s.hold(ev)
		return false
	}
	p := ev.pub
	if ev.reset {
		if p.Epoch != s.epoch || p.Offset > s.last {
			s.announceGap(p.Epoch, p.Offset, ev.reason)
		}
		return false
	}
	if p.Epoch != s.epoch {
		s.announceGap(p.Epoch, p.Offset-1, channels.ReasonEpochMismatch)
	}
	if p.Offset <= s.last {
		return false // already delivered (history and live feed overlap)
	}
	if p.Offset != s.last+1 {
		s.announceGap(p.Epoch, p.Offset-1, channels.ReasonOffsetExpired)
	}
	s.last = p.Offset
	if ready == nil {
		return s.c.send(ev.frame)
	}
	queued, start := s.c.enqueue(ev.frame, false)
	if start {
		*ready = append(*ready, s.c)
	}
	return queued
}

// hold keeps a live publication for the end of the recovery. Past the
// bound the client is closed, and for a closing client nothing is kept:
// what it held is dropped at once rather than when the session ends,
// seconds later (close handshake), while a busy channel adds to it. hc.mu
// is held.
func (s *subscription) hold(ev event) {
	n := len(ev.frame) + heldEventSize
	if !s.c.holdPending(n) {
		s.dropPending()
		s.c.closeWith(StatusTooSlow, "send queue overflow") // nothing if closing already
		return
	}
	s.pending = append(s.pending, ev)
	s.pendingBytes += n
}

// announceGap tells the client it missed publications and continues from
// pos; a server-initiated subscribed frame (no id) with recovered:false.
func (s *subscription) announceGap(epoch string, offset uint64, reason string) {
	s.c.send(encode(subscribedFrame{Type: "subscribed", Channel: s.hc.name, Epoch: epoch, Offset: offset, Recovered: false, Reason: reason}))
	s.c.hub.opts.Metrics.Gap(reason)
	s.epoch, s.last = epoch, offset
}

// subscribe joins a channel, race-free: the subscription is attached to the
// live feed (holding what arrives) before the log is read, then the reply,
// the missed publications and the held ones are queued in offset order.
func (c *client) subscribe(f frame) {
	name, err := c.checkChannel(f.Channel)
	if err == nil && f.Since != nil && f.Since.Epoch == "" {
		err = badRequest(`"since" needs an "epoch"`)
	}
	if err != nil {
		c.replyError(f.ID, err)
		return
	}
	if _, ok := c.subs[name]; ok {
		c.replyError(f.ID, &requestError{codeAlreadySubscribed, "already subscribed to " + name})
		return
	}
	if len(c.subs) >= c.hub.opts.MaxSubscriptions {
		c.replyError(f.ID, &requestError{codeTooManySubscriptions, fmt.Sprintf("at most %d subscriptions per connection", c.hub.opts.MaxSubscriptions)})
		return
	}
	ctx, cancel := context.WithTimeout(c.ctx, c.hub.opts.BrokerTimeout)
	defer cancel()
	hc, err := c.hub.acquire(ctx, name)
	if err != nil {
		c.replyError(f.ID, err)
		return
	}
	s := &subscription{c: c, hc: hc, recovering: true, done: make(chan struct{})}
	hc.mu.Lock()
	hc.subs[s] = struct{}{}
	hc.mu.Unlock()
	c.subs[name] = s
	c.hub.opts.Metrics.Subscribed(name)

	opts := channels.HistoryOptions{Since: f.Since}
	if f.Since != nil {
		opts.Limit, opts.MaxBytes = replayPage, c.hub.MaxPublication()
		if !c.hasRoom(c.hub.MaxPublication() - 1) {
			// No missed publication could be queued now (see
			// queueMissed): read the position only, and leave the
			// publications to the replay, which reads them once they fit.
			opts.Limit = 1
		}
	}
	res, err := c.hub.broker.History(ctx, name, opts)
	if err != nil {
		c.leave(s)
		c.replyError(f.ID, err)
		return
	}

	hc.mu.Lock()
	reply := subscribedFrame{ID: f.ID, Type: "subscribed", Channel: name, Epoch: res.Epoch, Offset: res.Offset}
	if f.Since != nil {
		reply.Recovered, reply.Reason = res.Recover(*f.Since)
		c.hub.opts.Metrics.Resumed(reply.Recovered, reply.Reason)
	}
	if !c.send(encode(reply)) {
		hc.mu.Unlock()
		return
	}
	s.epoch, s.last = res.Epoch, res.Offset
	if reply.Recovered {
		s.last = f.Since.Offset
		s.queueMissed(res.Publications, res.Offset)
	}
	if s.last >= res.Offset {
		if _, ok := s.handOver(); ok {
			hc.mu.Unlock()
			return
		}
	}
	// More was missed than one page, or what was held meanwhile does not
	// fit beside what is queued: the replay goes on as the client drains
	// its queue, so that a long absence never overflows it, and hands
	// over once the held publications fit.
	hc.mu.Unlock()
	go c.replay(s, res.Offset)
}

// replayPage is how many missed publications a resume reads and queues at
// a time.
const replayPage = 256

// queueMissed queues missed publications up to target, in order, as long
// as the client's queue has room for them (half of it; the rest is for
// live traffic). The caller continues from s.last. It returns the size of
// the frame it found no room for (0: none). hc.mu is held.
func (s *subscription) queueMissed(pubs []channels.Publication, target uint64) (refused int) {
	replayed := 0
	defer func() { s.c.hub.opts.Metrics.Replayed(replayed) }()
	for _, p := range pubs {
		if p.Offset <= s.last || p.Offset > target {
			continue
		}
		f := pubFrame(s.hc.name, p)
		if !s.c.sendWithin(f, s.c.hub.MaxPublication()) {
			return len(f)
		}
		s.last = p.Offset
		replayed++
	}
	return 0
}

// replay queues the rest of a resume, a page at a time, each once the
// client's queue has room, then goes live once what was held meanwhile
// fits (see handOver). It ends early when the client closes or the
// subscription ends.
func (c *client) replay(s *subscription, target uint64) {
	hc := s.hc
	room := c.hub.opts.SendQueueBytes / 4
	for {
		if !c.waitRoom(room, s.done) {
			return
		}
		hc.mu.Lock()
		if s.gone {
			hc.mu.Unlock()
			return
		}
		if s.last >= target {
			need, ok := s.handOver()
			hc.mu.Unlock()
			if ok {
				return
			}
			room = need
			continue
		}
		since := channels.Position{Offset: s.last, Epoch: s.epoch}
		hc.mu.Unlock()
		ctx, cancel := context.WithTimeout(c.ctx, c.hub.opts.BrokerTimeout)
		res, err := c.hub.broker.History(ctx, hc.name, channels.HistoryOptions{Since: &since, Limit: replayPage, MaxBytes: c.hub.MaxPublication()})
		cancel()
		if err != nil {
			// The rest of the log cannot be read now: let the client come
			// back and resume from what it has.
			c.closeWith(websocket.StatusTryAgainLater, "resume interrupted; resubscribe with since")
			return
		}
		hc.mu.Lock()
		if s.gone {
			hc.mu.Unlock()
			return
		}
		refused := 0
		switch ok, reason := res.Recover(since); {
		case res.Epoch != s.epoch:
			// The log was reset while replaying: what is left is gone.
			s.announceGap(res.Epoch, res.Offset, channels.ReasonEpochMismatch)
		case !ok || len(res.Publications) == 0:
			if reason == "" {
				reason = channels.ReasonOffsetExpired
			}
			if h := s.heldFrom(); res.Earliest > s.last+1 && h != 0 && h < res.Earliest {
				// The log lost publications that the live feed brought
				// while the subscription recovered, and that are held:
				// only those before the first held one are missing,
				// and the held ones follow (at the hand-over).
				if h-1 > s.last {
					s.announceGap(s.epoch, h-1, reason)
				}
				target = s.last
				break
			}
			s.announceGap(s.epoch, max(res.Earliest-1, s.last), reason)
			fallthrough
		default:
			refused = s.queueMissed(res.Publications, target)
		}
		if s.last >= target || res.Epoch != since.Epoch || len(res.Publications) == 0 {
			if s.epoch == since.Epoch {
				// target is an offset of the epoch the replay began in;
				// after a reset it would hide the new epoch's first ones.
				s.last = max(s.last, target)
			}
			// Nothing more to read: hand over (at the loop's top), now
			// or once it fits.
			target = s.last
			hc.mu.Unlock()
			room = c.hub.opts.SendQueueBytes
			continue
		}
		// A next publication larger than a quarter of the queue may not
		// fit beside what a quarter leaves: then wait until it fits,
		// rather than read the log again and again to no end.
		room = c.hub.opts.SendQueueBytes / 4
		if s.last == since.Offset && refused > 0 {
			room = max(c.hub.MaxPublication()-refused, 0)
		}
		hc.mu.Unlock()
	}
}

// heldFrom is the offset of the first live publication held while
// recovering, when it is one of the epoch recovered (0: none).
func (s *subscription) heldFrom() uint64 {
	if len(s.pending) == 0 || s.pending[0].reset || s.pending[0].pub.Epoch != s.epoch {
		return 0
	}
	return s.pending[0].pub.Offset
}

// handOver ends the recovery (finishRecovery) if the live publications
// held meanwhile fit in the client's queue now, and reports whether it
// did. Queued behind a page of missed ones they may not: they are allowed
// up to the whole queue, and would close a client that reads as too
// slow. need is then what may wait to be written for them to fit. hc.mu
// is held.
func (s *subscription) handOver() (need int, ok bool) {
	need = s.c.hub.opts.SendQueueBytes - (s.pendingBytes - len(s.pending)*heldEventSize)
	if !s.c.hasRoom(need) {
		return need, false
	}
	s.finishRecovery()
	return 0, true
}

// finishRecovery hands over to the live feed: publications held while
// recovering are delivered (those already replayed are skipped). hc.mu is
// held.
func (s *subscription) finishRecovery() {
	s.recovering = false
	delivered := 0
	for _, ev := range s.pending {
		if s.deliver(ev, nil) {
			delivered++
		}
	}
	s.c.hub.opts.Metrics.Delivered(delivered)
	s.dropPending()
}

// dropPending forgets the publications held while recovering, and their
// count against the client. hc.mu is held.
func (s *subscription) dropPending() {
	s.c.releasePending(s.pendingBytes)
	s.pending, s.pendingBytes = nil, 0
}

func (c *client) unsubscribe(f frame) {
	name, err := c.checkName(f.Channel)
	if err != nil {
		c.replyError(f.ID, err)
		return
	}
	s, ok := c.subs[name]
	if !ok {
		c.replyError(f.ID, &requestError{codeNotSubscribed, "not subscribed to " + name})
		return
	}
	c.leave(s)
	c.send(encode(channelFrame{ID: f.ID, Type: "unsubscribed", Channel: name}))
}

// leave detaches a subscription and releases its channel.
func (c *client) leave(s *subscription) {
	delete(c.subs, s.hc.name)
	c.hub.opts.Metrics.Unsubscribed(s.hc.name)
	s.hc.mu.Lock()
	delete(s.hc.subs, s)
	if !s.gone {
		s.gone = true
		close(s.done) // a replay waiting for room gives up
	}
	s.dropPending()
	s.hc.mu.Unlock()
	c.hub.release(s.hc)
}

// MaxHistoryLimit is the most publications one history request returns.
const MaxHistoryLimit = 1000

// DefaultHistoryLimit applies when a history request names no limit.
const DefaultHistoryLimit = 100

func (c *client) history(f frame) {
	name, err := c.checkChannel(f.Channel)
	if err != nil {
		c.replyError(f.ID, err)
		return
	}
	opts, err := HistoryRequest(f.Since, f.Limit, c.hub.MaxPublication())
	if err != nil {
		c.replyError(f.ID, err)
		return
	}
	ctx, cancel := context.WithTimeout(c.ctx, c.hub.opts.BrokerTimeout)
	defer cancel()
	res, err := c.hub.broker.History(ctx, name, opts)
	if err != nil {
		c.replyError(f.ID, err)
		return
	}
	reply := NewHistoryReply(name, res, opts)
	reply.ID, reply.Type = f.ID, "history"
	c.sendReply(encode(reply))
}

// historyItemOverhead is what a publication adds to a history reply
// besides its data, generously: `{"offset":18446744073709551615,"data":},`.
const historyItemOverhead = 48

// bounded keeps the publications of a history reply that fit in budget
// bytes, and reports whether it left any out. A reply is one frame, and
// one larger than the send queue would close the client as too slow for
// having asked. Without since a request wants the newest, so the newest
// are kept; with since, those right after it, so that asking again after
// the last one continues without a gap. At least one is always kept; a
// budget of 0 keeps all.
func bounded(pubs []HistoryPublication, budget int, newest bool) ([]HistoryPublication, bool) {
	if budget <= 0 {
		return pubs, false
	}
	size, n := 0, 0
	for n < len(pubs) {
		p := pubs[n]
		if newest {
			p = pubs[len(pubs)-1-n]
		}
		size += len(p.Data) + historyItemOverhead
		if size > budget && n > 0 {
			break
		}
		n++
	}
	if n == len(pubs) {
		return pubs, false
	}
	if newest {
		return pubs[len(pubs)-n:], true
	}
	return pubs[:n], true
}

// HistoryRequest validates a history request's since and limit (nil when
// absent) and returns the broker options for a reply of at most budget
// bytes (see NewHistoryReply).
func HistoryRequest(since *channels.Position, limit *int, budget int) (channels.HistoryOptions, error) {
	opts := channels.HistoryOptions{Since: since, Limit: DefaultHistoryLimit, MaxBytes: budget}
	if limit != nil {
		if *limit < 1 || *limit > MaxHistoryLimit {
			return opts, badRequest(fmt.Sprintf(`"limit" must be between 1 and %d`, MaxHistoryLimit))
		}
		opts.Limit = *limit
	}
	if since != nil && since.Epoch == "" {
		return opts, badRequest(`"since" needs an "epoch"`)
	}
	return opts, nil
}

// checkName validates a channel name.
func (c *client) checkName(s string) (string, error) {
	if _, err := channels.Parse(s); err != nil {
		return "", badRequest(err.Error())
	}
	return s, nil
}

// checkChannel validates a channel name and the client's grant for it.
func (c *client) checkChannel(s string) (string, error) {
	name, err := c.checkName(s)
	if err != nil {
		return "", err
	}
	if !c.grants.Allows(name) {
		return "", &requestError{codeForbidden, "token does not grant " + name}
	}
	return name, nil
}

// acquire takes a reference on a channel, subscribing this node to the
// broker's live feed for it if it is the first.
func (h *Hub) acquire(ctx context.Context, name string) (*hubChannel, error) {
	h.mu.Lock()
	hc := h.chans[name]
	if hc == nil {
		hc = &hubChannel{name: name, subs: make(map[*subscription]struct{})}
		h.chans[name] = hc
	}
	hc.refs++
	h.mu.Unlock()

	hc.brokerMu.Lock()
	var err error
	if !hc.subscribed {
		if err = h.broker.Subscribe(ctx, name); err == nil {
			hc.subscribed = true
		}
	}
	hc.brokerMu.Unlock()
	if err != nil {
		h.release(hc)
		return nil, fmt.Errorf("subscribing to %s: %w", name, err)
	}
	return hc, nil
}

// release drops a reference; the last one unsubscribes the node from the
// broker. The channel stays in the map until then, so that a concurrent
// acquire of the same name is ordered after the Unsubscribe.
func (h *Hub) release(hc *hubChannel) {
	h.mu.Lock()
	hc.refs--
	idle := hc.refs == 0
	h.mu.Unlock()
	if !idle {
		return
	}
	hc.brokerMu.Lock()
	defer hc.brokerMu.Unlock()
	h.mu.Lock()
	idle = hc.refs == 0
	h.mu.Unlock()
	if idle && hc.subscribed {
		ctx, cancel := context.WithTimeout(h.ctx, h.opts.BrokerTimeout)
		if err := h.broker.Unsubscribe(ctx, hc.name); err != nil && !errors.Is(err, context.Canceled) {
			h.log.Warn("broker unsubscribe failed", "channel", hc.name, "err", err)
		}
		cancel()
		hc.subscribed = false
	}
	h.mu.Lock()
	if hc.refs == 0 && !hc.subscribed && h.chans[hc.name] == hc {
		delete(h.chans, hc.name)
	}
	h.mu.Unlock()
}
