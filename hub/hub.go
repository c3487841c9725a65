package hub

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/coder/websocket"

	"herald/auth"
	"herald/channels"
	"herald/internal/clientip"
	"herald/metrics"
)

// Close codes herald uses beyond the RFC's (SPEC §2).
const (
	StatusUnauthorized  websocket.StatusCode = 4001
	StatusProtocolError websocket.StatusCode = 4002
	StatusTokenExpired  websocket.StatusCode = 4008
	StatusTooSlow       websocket.StatusCode = 4009
	StatusShuttingDown  websocket.StatusCode = 4010
	// StatusRateLimited: too many connections from one address, or frames
	// faster than a sane client sends them.
	StatusRateLimited websocket.StatusCode = 4029
)

// Subprotocol is the websocket subprotocol herald speaks.
const Subprotocol = "herald.v1"

// Verifier checks a client's token.
type Verifier interface {
	Verify(token string) (*auth.Claims, error)
}

// Options configure a Hub. Zero values take the defaults in brackets.
type Options struct {
	// Node names this node in connected frames [hostname is the caller's job; "herald"].
	Node     string
	Broker   channels.Broker
	Verifier Verifier
	Logger   *slog.Logger
	// AuthTimeout bounds the wait for the first frame when the upgrade
	// carried no token [10s].
	AuthTimeout time.Duration
	// PingInterval is the time between server pings [25s]; a peer that does
	// not answer within PongTimeout [30s] is dropped.
	PingInterval time.Duration
	PongTimeout  time.Duration
	// MaxFrameBytes is the largest client frame accepted; larger ones close
	// the connection with 1009 [64 KiB].
	MaxFrameBytes int64
	// SendQueueBytes bounds what may wait to be written to one client,
	// including a resume's missed publications; beyond it the client is
	// closed with 4009 [4 MiB]. History replies the client asked for may
	// wait beyond it, with what follows them, up to as much again, and
	// live publications held while its subscriptions recover up to as
	// much again.
	SendQueueBytes int
	// MaxSubscriptions per connection [256].
	MaxSubscriptions int
	// BrokerTimeout bounds each broker call a session makes [5s].
	BrokerTimeout time.Duration
	// OriginPatterns are the browser origins allowed to connect, as in
	// websocket.AcceptOptions [all: tokens, not cookies, authenticate].
	OriginPatterns []string
	// ClientIP finds a connection's client address behind trusted proxies
	// [the peer's address].
	ClientIP clientip.Resolver
	// MaxConnsPerIP bounds the connections from one client address (an
	// IPv6 client's /64, which one host commonly holds whole); more are
	// closed with 4029 [1000: carrier NATs put many users behind one].
	MaxConnsPerIP int
	// MaxConns bounds the node's websocket connections; more are closed
	// with 1013, so that a client tries another node. A quarter of them at
	// most may be awaiting authentication. [the process's file limit less
	// FilesKept, so that websocket clients cannot take the file
	// descriptors ingress, the API and the broker need; connections not
	// upgraded yet are not counted here: cmd/herald's listener bounds all
	// connections at MaxConns plus 512].
	MaxConns int
	// FrameRate (per second) and FrameBurst bound the frames one connection
	// may send; faster closes it with 4029 [50/s, burst 300: enough to
	// subscribe to every channel at once].
	FrameRate  float64
	FrameBurst int
	// Metrics receives the hub's counters [none].
	Metrics *metrics.Hub
}

func (o *Options) setDefaults() {
	if o.Node == "" {
		o.Node = "herald"
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.AuthTimeout <= 0 {
		o.AuthTimeout = 10 * time.Second
	}
	if o.PingInterval <= 0 {
		o.PingInterval = 25 * time.Second
	}
	if o.PongTimeout <= 0 {
		o.PongTimeout = 30 * time.Second
	}
	if o.MaxFrameBytes <= 0 {
		o.MaxFrameBytes = 64 << 10
	}
	if o.SendQueueBytes <= 0 {
		o.SendQueueBytes = 4 << 20
	}
	if o.MaxSubscriptions <= 0 {
		o.MaxSubscriptions = 256
	}
	if o.BrokerTimeout <= 0 {
		o.BrokerTimeout = 5 * time.Second
	}
	if o.MaxConnsPerIP <= 0 {
		o.MaxConnsPerIP = 1000
	}
	if o.MaxConns <= 0 {
		o.MaxConns = DefaultMaxConns()
	}
	if o.FrameRate <= 0 {
		o.FrameRate = 50
	}
	if o.FrameBurst <= 0 {
		o.FrameBurst = 300
	}
	if len(o.OriginPatterns) == 0 {
		o.OriginPatterns = []string{"*"}
	}
}

// Hub serves websocket clients. It is the channels.Handler of its broker.
type Hub struct {
	opts   Options
	broker channels.Broker
	log    *slog.Logger

	// ctx is the parent of every session; cancelled when the hub stops.
	ctx    context.Context
	cancel context.CancelFunc

	mu      sync.RWMutex
	chans   map[string]*hubChannel
	clients map[*client]struct{}
	perIP   map[netip.Addr]int
	// unauthenticated counts the sessions awaiting their connect frame.
	unauthenticated int
	draining        bool
	sessions        sync.WaitGroup
}

var _ channels.Handler = (*Hub)(nil)

// New returns a Hub. The caller starts the broker with the hub as its
// handler: broker.Start(hub).
func New(opts Options) (*Hub, error) {
	opts.setDefaults()
	if opts.Broker == nil || opts.Verifier == nil {
		return nil, errors.New("hub: Broker and Verifier are required")
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Hub{
		opts:    opts,
		broker:  opts.Broker,
		log:     opts.Logger,
		ctx:     ctx,
		cancel:  cancel,
		chans:   make(map[string]*hubChannel),
		clients: make(map[*client]struct{}),
		perIP:   make(map[netip.Addr]int),
	}, nil
}

// MaxPublication is the largest publication data this hub's clients can
// be sent: half the send queue, so that one always fits in a replay page
// and a history reply, and a frame larger than the whole queue never
// closes every subscriber of its channel, and again on every resume. It
// is also what a resume queues and reads at a time (the other half is for
// live traffic) and the bound of a history frame, so that a reply never
// closes the client that asked as too slow.
func (h *Hub) MaxPublication() int { return h.opts.SendQueueBytes / 2 }

// Clients returns the number of connected clients.
func (h *Hub) Clients() int {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return len(h.clients)
}

// Drain refuses new connections and closes every client with 4010, spread
// evenly over window so that a fleet does not reconnect all at once. It
// returns when every session ended or ctx is done.
func (h *Hub) Drain(ctx context.Context, window time.Duration) error {
	h.mu.Lock()
	h.draining = true
	clients := make([]*client, 0, len(h.clients))
	for c := range h.clients {
		clients = append(clients, c)
	}
	h.mu.Unlock()

	// Client i closes at start + i*window/n: the schedule is kept against
	// the start, so time spent closing does not stretch the window. Map
	// order has already shuffled the clients.
	start := time.Now()
	for i, c := range clients {
		at := start.Add(window * time.Duration(i) / time.Duration(len(clients)))
		if wait := time.Until(at); wait > 0 && ctx.Err() == nil {
			select {
			case <-time.After(wait):
			case <-ctx.Done():
			}
		}
		c.closeWith(StatusShuttingDown, "node shutting down")
	}
	done := make(chan struct{})
	go func() { h.sessions.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close ends every session at once without a close handshake.
func (h *Hub) Close() {
	h.mu.Lock()
	h.draining = true
	h.mu.Unlock()
	h.cancel()
	h.sessions.Wait()
}

// register counts a new session, awaiting authentication unless it has
// claims. It refuses when the node is draining (4010), the client's
// address has too many sessions (4029), or the node has (1013).
func (h *Hub) register(c *client, claims *auth.Claims) websocket.StatusCode {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.draining {
		return StatusShuttingDown
	}
	if h.perIP[c.ip] >= h.opts.MaxConnsPerIP {
		return StatusRateLimited
	}
	if len(h.clients) >= h.opts.MaxConns || claims == nil && h.unauthenticated >= max(h.opts.MaxConns/4, 1) {
		return websocket.StatusTryAgainLater
	}
	if claims == nil {
		c.unauthenticated = true
		h.unauthenticated++
	}
	h.perIP[c.ip]++
	h.clients[c] = struct{}{}
	h.sessions.Add(1)
	h.opts.Metrics.Connected()
	return 0
}

// authenticated stops counting c as awaiting authentication.
func (h *Hub) authenticated(c *client) {
	h.mu.Lock()
	h.stopAwaiting(c)
	h.mu.Unlock()
}

// stopAwaiting uncounts c from the sessions awaiting authentication, if it
// was one; h.mu is held.
func (h *Hub) stopAwaiting(c *client) {
	if c.unauthenticated {
		c.unauthenticated = false
		h.unauthenticated--
	}
}

func (h *Hub) unregister(c *client) {
	h.mu.Lock()
	delete(h.clients, c)
	if h.perIP[c.ip]--; h.perIP[c.ip] <= 0 {
		delete(h.perIP, c.ip)
	}
	h.stopAwaiting(c)
	h.mu.Unlock()
	h.opts.Metrics.Disconnected()
	h.sessions.Done()
}

// refuse answers an upgrade request with status and {"error": msg}.
func refuse(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(marshal(map[string]string{"error": msg}))
}

// ServeHTTP upgrades GET /ws and starts the session; it does not wait for
// the session to end (Drain and Close do).
func (h *Hub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mu.RLock()
	draining := h.draining
	h.mu.RUnlock()
	if draining {
		refuse(w, http.StatusServiceUnavailable, "node shutting down")
		return
	}
	var claims *auth.Claims
	if token, ok := auth.Bearer(r.Header); ok {
		var err error
		if claims, err = h.opts.Verifier.Verify(token); err != nil {
			refuse(w, http.StatusUnauthorized, err.Error())
			return
		}
	}
	up := &upgrader{ResponseWriter: w}
	conn, err := websocket.Accept(up, r, &websocket.AcceptOptions{
		Subprotocols:   []string{Subprotocol},
		OriginPatterns: h.opts.OriginPatterns,
	})
	if err != nil {
		// Accept has already answered the request.
		h.log.Debug("websocket upgrade failed", "err", err)
		return
	}
	conn.SetReadLimit(h.opts.MaxFrameBytes)
	c := newClient(h, conn, addressOf(h.opts.ClientIP.Of(r)))
	c.wire = up.wire
	if code := h.register(c, claims); code != 0 {
		reason := "too many connections from your address"
		switch code {
		case StatusShuttingDown:
			reason = "node shutting down"
		case websocket.StatusTryAgainLater:
			reason = "node at its connection limit"
		}
		c.closeWith(code, reason) // counts it, and releases its context
		return
	}
	// The session runs on a goroutine of its own and the handler returns:
	// net/http's connection state, with its 4 KiB read and write buffers,
	// is then freed rather than kept for the session's life, and the
	// session's stack does not carry the server's frames.
	go func() {
		defer h.unregister(c)
		c.run(claims)
	}()
}
