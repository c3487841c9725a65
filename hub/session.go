package hub

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net/netip"
	"sync"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/time/rate"

	"herald/auth"
	"herald/channels"
)

// client is one websocket session.
type client struct {
	hub  *Hub
	conn *websocket.Conn
	// wire is conn's connection: the writer goroutine writes the queued
	// frames to it directly, a batch in one system call.
	wire *wire
	id   string
	// ip is what the per-address limit counts: the client's address, an
	// IPv6 one cut to its /64.
	ip netip.Addr
	// unauthenticated: the session awaits its connect frame (guarded by
	// the hub's mu).
	unauthenticated bool
	// frames limits how fast the client may send.
	frames *rate.Limiter
	ctx    context.Context
	stop   context.CancelFunc

	// Owned by the session's read goroutine.
	claims *auth.Claims
	grants channels.Grants
	subs   map[string]*subscription
	// readErr is what ended the read loop: it tells how the peer closed.
	readErr error

	// mu guards the send queue and the timers. What a delivery touches
	// comes first, together.
	mu      sync.Mutex
	writing bool
	closing bool
	queue   [][]byte
	queued  int
	// held are frames waiting for room in the queue: a history reply that
	// did not fit, and every frame after it; heldBytes their size (see
	// enqueue).
	held      [][]byte
	heldBytes int
	// room, when not nil, is closed once at most roomAt bytes are queued
	// (see waitRoom).
	room   chan struct{}
	roomAt int
	// pendingBytes is what the client's recovering subscriptions hold of
	// live publications, with the events' own size (see holdPending).
	pendingBytes int
	// expires is when the client's token expires; expiry closes the
	// session then (see expire).
	expires   time.Time
	expiry    *time.Timer
	pingTimer *time.Timer
}

func newClient(h *Hub, conn *websocket.Conn, ip netip.Addr) *client {
	ctx, stop := context.WithCancel(h.ctx)
	return &client{
		hub: h, conn: conn, id: newID(), ip: ip, ctx: ctx, stop: stop,
		frames: rate.NewLimiter(rate.Limit(h.opts.FrameRate), h.opts.FrameBurst),
		subs:   make(map[string]*subscription),
	}
}

// run authenticates the client (claims are nil when the upgrade carried no
// token), then reads and answers frames until the connection ends.
//
// The session's goroutine does nothing but wait on the connection: the
// work of a frame (JSON, token checks, broker calls) runs on a goroutine
// of its own that it waits for (aside). Its stack then stays as small as
// reading needs, 4 KiB instead of 8 for every idle client: a stack that
// once grew is not shrunk while a quarter of it is in use.
func (c *client) run(claims *auth.Claims) {
	defer c.cleanup()
	ok := true
	aside(func() { ok = c.start(claims) })
	for ok {
		typ, data, err := c.conn.Read(c.ctx)
		if err != nil {
			c.readErr = err
			return
		}
		if !c.frames.Allow() {
			c.closeWith(StatusRateLimited, "frames too fast")
			return
		}
		aside(func() { ok = c.frame(typ, data) })
	}
}

// aside runs f on a goroutine of its own and waits for it.
func aside(f func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	<-done
}

// start authenticates the client if it has no claims yet, then sends the
// connected frame and starts pinging. It reports false when the session
// must end.
func (c *client) start(claims *auth.Claims) bool {
	var connectID *int64
	if claims == nil {
		var ok bool
		if claims, connectID, ok = c.authenticate(); !ok {
			return false
		}
		c.hub.authenticated(c)
	}
	c.setClaims(claims)
	c.send(encode(connectedFrame{ID: connectID, Type: "connected", Client: c.id, Node: c.hub.opts.Node, Expires: claims.Expires().Unix()}))
	// connected is written before the client's first frame is read: a
	// close that follows (a protocol error, a flood) drops what is queued,
	// and the protocol promises connected first.
	if !c.waitRoom(0, nil) {
		return false
	}
	return c.startPinging()
}

// startPinging arms the ping timer, unless the client is closing (a timer
// armed then would keep the closed client until it fired), and reports
// whether it did.
func (c *client) startPinging() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return false
	}
	c.pingTimer = time.AfterFunc(c.hub.opts.PingInterval, c.ping)
	return true
}

// frame answers one client frame. It reports false when the session must
// end.
func (c *client) frame(typ websocket.MessageType, data []byte) bool {
	if typ != websocket.MessageText {
		c.protocolError("binary frames are not supported")
		return false
	}
	f, err := decodeFrame(data)
	if errors.Is(err, errProtocol) {
		c.protocolError(err.Error())
		return false
	}
	if err != nil {
		c.replyError(f.ID, err)
		return true
	}
	c.handle(f)
	return true
}

// authenticate waits for the connect frame. On failure it closes the
// connection with 4001 and reports false.
func (c *client) authenticate() (*auth.Claims, *int64, bool) {
	timer := time.AfterFunc(c.hub.opts.AuthTimeout, func() {
		c.closeWith(StatusUnauthorized, "authentication timeout")
	})
	defer timer.Stop()
	typ, data, err := c.conn.Read(c.ctx)
	if err != nil {
		c.readErr = err
		return nil, nil, false
	}
	if !timer.Stop() {
		return nil, nil, false // timed out while the frame arrived
	}
	f, err := decodeFrame(data)
	if typ != websocket.MessageText || err != nil || f.Type != typeConnect {
		c.closeWith(StatusUnauthorized, "first frame must be connect")
		return nil, nil, false
	}
	claims, err := c.hub.opts.Verifier.Verify(f.Token)
	if err != nil {
		c.closeWith(StatusUnauthorized, closeReason(err.Error()))
		return nil, nil, false
	}
	return claims, f.ID, true
}

func (c *client) setClaims(claims *auth.Claims) {
	c.claims = claims
	c.grants = claims.Grants()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return // a timer armed now would keep the closed client until it fired
	}
	c.expires = claims.Expires()
	d := time.Until(c.expires)
	if c.expiry == nil {
		c.expiry = time.AfterFunc(d, c.expire)
		return
	}
	c.expiry.Reset(d)
}

// expire closes the session when its token expired. The timer may have
// fired as a refresh reset it, and this run then, or a hair early by the
// wall clock the expiry is in: whatever time the current token has left,
// it waits that out again.
func (c *client) expire() {
	c.mu.Lock()
	if left := time.Until(c.expires); left > 0 {
		if !c.closing {
			c.expiry.Reset(left)
		}
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	c.closeWith(StatusTokenExpired, "token expired")
}

func (c *client) handle(f frame) {
	switch f.Type {
	case typeSubscribe:
		c.subscribe(f)
	case typeUnsubscribe:
		c.unsubscribe(f)
	case typeHistory:
		c.history(f)
	case typeRefresh:
		c.refresh(f)
	case typePing:
		c.send(encode(replyFrame{ID: f.ID, Type: "pong"}))
	case typeConnect:
		c.replyError(f.ID, badRequest("already connected"))
	}
}

func (c *client) refresh(f frame) {
	if f.Token == "" {
		c.replyError(f.ID, badRequest(`refresh needs a "token"`))
		return
	}
	claims, err := c.hub.opts.Verifier.Verify(f.Token)
	if err != nil {
		c.replyError(f.ID, &requestError{codeForbidden, err.Error()})
		return
	}
	if claims.Subject != c.claims.Subject {
		c.replyError(f.ID, &requestError{codeForbidden, "refresh token is for another sub"})
		return
	}
	c.mu.Lock()
	expired := c.closing
	c.mu.Unlock()
	if expired {
		return
	}
	c.setClaims(claims)
	c.send(encode(refreshedFrame{ID: f.ID, Type: "refreshed", Expires: claims.Expires().Unix()}))
	// A refreshed token may grant less: drop what it no longer covers.
	for name, s := range c.subs {
		if !c.grants.Allows(name) {
			c.leave(s)
			c.send(encode(channelFrame{Type: "unsubscribed", Channel: name}))
		}
	}
}

// ping keeps the connection alive and drops a peer that stopped answering.
// It runs on a timer, so an idle client has no goroutine for it.
func (c *client) ping() {
	ctx, cancel := context.WithTimeout(c.ctx, c.hub.opts.PongTimeout)
	defer cancel()
	if err := c.conn.Ping(ctx); err != nil {
		// A ping that timed out has already closed the connection.
		c.broken()
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.closing {
		c.pingTimer.Reset(c.hub.opts.PingInterval)
	}
}

func (c *client) replyError(id *int64, err error) {
	var re *requestError
	if !errors.As(err, &re) {
		re = &requestError{codeInternal, "internal error"}
		if errors.Is(err, channels.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded) {
			re = &requestError{codeUnavailable, "broker unavailable; retry"}
		} else {
			c.hub.log.Error("request failed", "client", c.id, "err", err)
		}
	}
	c.send(encode(errorFrame{ID: id, Type: "error", Code: re.code, Message: re.message}))
}

func (c *client) protocolError(msg string) {
	c.closeWith(StatusProtocolError, closeReason(msg))
}

// closeWith starts the close handshake with code, once, without blocking the
// caller; anything still queued is dropped.
func (c *client) closeWith(code websocket.StatusCode, reason string) {
	if !c.markClosing(code) {
		return
	}
	go func() {
		_ = c.conn.Close(code, reason)
		c.stop()
	}()
}

// closeNow drops the connection without a handshake; code is how the
// session ended, for the metrics.
func (c *client) closeNow(code websocket.StatusCode) {
	c.markClosing(code)
	_ = c.conn.CloseNow()
	c.stop()
}

// markClosing moves the session to closing, once, and counts how it ended.
func (c *client) markClosing(code websocket.StatusCode) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return false
	}
	c.closing = true
	c.hub.opts.Metrics.Closed(int(code))
	c.queue, c.queued = nil, 0
	c.held, c.heldBytes = nil, 0
	if c.room != nil {
		close(c.room) // a replay waiting for room gives up
		c.room = nil
	}
	if c.expiry != nil {
		c.expiry.Stop()
	}
	if c.pingTimer != nil {
		c.pingTimer.Stop()
	}
	return true
}

// cleanup runs when the session's read loop ends: it leaves every channel
// and, unless herald ended the session, counts how it ended and closes the
// connection. (A close frame the library sent has been written by then.)
func (c *client) cleanup() {
	for _, s := range c.subs {
		c.leave(s)
	}
	c.mu.Lock()
	closing := c.closing
	c.mu.Unlock()
	if !closing {
		c.closeNow(c.endCode())
	}
}

// endCode is how a session that herald did not end was ended: the
// client's close code (1000 or 1001; any other it chose is clientOther),
// the code of the close frame the library answered with (1002 for a
// protocol error), 1009 for a frame over the read limit, or 1006 for a
// connection that simply went away.
func (c *client) endCode() websocket.StatusCode {
	if code := websocket.CloseStatus(c.readErr); code != -1 {
		if code != websocket.StatusNormalClosure && code != websocket.StatusGoingAway {
			return clientOther
		}
		return code
	}
	if code := c.wire.sentClose(); code != 0 {
		return code
	}
	if errors.Is(c.readErr, websocket.ErrMessageTooBig) {
		return websocket.StatusMessageTooBig
	}
	return websocket.StatusAbnormalClosure
}

// clientOther counts a close code a client chose besides 1000 and 1001:
// as "other", never as one of herald's own (a client closing with 4009
// must not raise herald_send_queue_overflows_total).
const clientOther websocket.StatusCode = 0

// closeReason fits a reason into a close frame (123 bytes).
func closeReason(s string) string {
	if len(s) > 123 {
		s = s[:120] + "..."
	}
	return s
}

func newID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
