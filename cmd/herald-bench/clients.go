package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// dialer opens websocket clients from a set of loopback source addresses,
// perSource clients each: herald limits the connections of one client
// address, and one run must never need more ephemeral ports of one
// address than the kernel has (≈28k, minus those still in TIME_WAIT from
// the previous run).
type dialer struct {
	url        string // ws://…/ws
	perSource  int
	https      []*http.Client
	centrifuge bool // speak Centrifuge's JSON protocol instead of herald's
}

func newDialer(wsURL string, sources []net.IP, perSource int, centrifuge bool) *dialer {
	d := &dialer{url: wsURL, perSource: perSource, centrifuge: centrifuge}
	for _, ip := range sources {
		nd := &net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}, Timeout: 10 * time.Second}
		d.https = append(d.https, &http.Client{Transport: &http.Transport{
			DialContext:       nd.DialContext,
			DisableKeepAlives: true,
			ForceAttemptHTTP2: false,
		}})
	}
	return d
}

// dial opens client i with a bearer token, so that herald answers with a
// connected frame at once. A Centrifuge client sends its token in its
// connect command instead.
func (d *dialer) dial(ctx context.Context, i int, token string) (*websocket.Conn, error) {
	opts := &websocket.DialOptions{
		HTTPClient:   d.https[min(i/d.perSource, len(d.https)-1)],
		HTTPHeader:   http.Header{"Authorization": {"Bearer " + token}},
		Subprotocols: []string{"herald.v1"},
	}
	if d.centrifuge {
		opts.HTTPHeader, opts.Subprotocols = nil, []string{"centrifuge-json"}
	}
	conn, _, err := websocket.Dial(ctx, d.url, opts)
	if err != nil {
		return nil, err
	}
	conn.SetReadLimit(-1)
	return conn, nil
}

// tally is what every client counts, summed over all of them.
type tally struct {
	received    atomic.Int64 // pub frames after the subscribe position
	duplicates  atomic.Int64 // an offset seen before
	gaps        atomic.Int64 // offsets skipped without a recovered:false frame
	reordered   atomic.Int64 // a skipped offset that arrived after later ones
	misrouted   atomic.Int64 // a publication of another client's channel
	lossFrames  atomic.Int64 // subscribed frames with recovered:false mid-run
	unknown     atomic.Int64 // pub frames whose send time is unknown
	readErrors  atomic.Int64 // connections that ended before the run did
	latency     histogram
	lastReceipt atomic.Int64 // ns since the run's clock start
}

// client is one websocket session of the harness.
type client struct {
	conn    *websocket.Conn
	channel string
	cf      bool // a Centrifuge client
	epoch   string
	// last is the offset of the last publication seen, and skipped the
	// offsets before it not seen (a few at most: a gap is an error); the
	// read loop owns both once started.
	last    uint64
	skipped map[uint64]bool
	// head is how each of its pub frames opens, after pubPrefix.
	head []byte
}

// controlFrame is what the harness reads of non-pub frames.
type controlFrame struct {
	ID        int64  `json:"id"`
	Type      string `json:"type"`
	Channel   string `json:"channel"`
	Epoch     string `json:"epoch"`
	Offset    uint64 `json:"offset"`
	Recovered bool   `json:"recovered"`
	Reason    string `json:"reason"`
	Code      string `json:"code"`
	Message   string `json:"message"`
}

// readControl reads the next frame, which must be of type want.
func readControl(ctx context.Context, conn *websocket.Conn, want string) (controlFrame, error) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	_, b, err := conn.Read(ctx)
	if err != nil {
		return controlFrame{}, err
	}
	f, err := parseControl(b)
	if err == nil && f.Type != want {
		err = fmt.Errorf("got %.200s, want a %s frame", b, want)
	}
	return f, err
}

func parseControl(b []byte) (controlFrame, error) {
	var f controlFrame
	if err := json.Unmarshal(b, &f); err != nil {
		return f, fmt.Errorf("frame %.80q: %w", b, err)
	}
	return f, nil
}

// connect dials client i, waits for connected, and subscribes it to
// channel from the channel's current position.
func connect(ctx context.Context, d *dialer, i int, token, channel string) (*client, error) {
	c := &client{channel: channel}
	if _, err := c.open(ctx, d, i, token, nil); err != nil {
		return nil, err
	}
	return c, nil
}

// open dials a connection for client i, waits for connected, and
// subscribes from since (the channel's current position when nil),
// returning the subscribed answer. The client goes on from the answer's
// position unless it resumed (recovered:true). Errors of the dial itself
// start with "dial".
func (c *client) open(ctx context.Context, d *dialer, i int, token string, since *position) (controlFrame, error) {
	conn, err := d.dial(ctx, i, token)
	if err != nil {
		return controlFrame{}, fmt.Errorf("dial: %w", err)
	}
	c.conn = conn
	if c.cf = d.centrifuge; c.cf {
		// Never with since: the options refuse the scenario that resumes
		// here (soak) with -protocol centrifuge.
		if err := c.cfOpen(ctx, token); err != nil {
			conn.CloseNow()
			return controlFrame{}, err
		}
		return controlFrame{}, nil
	}
	reply, err := readControl(ctx, conn, "connected")
	if err != nil {
		conn.CloseNow()
		return reply, fmt.Errorf("connect: %w", err)
	}
	if err := c.subscribeAsync(ctx, since); err != nil {
		conn.CloseNow()
		return reply, fmt.Errorf("subscribe: %w", err)
	}
	if reply, err = readControl(ctx, conn, "subscribed"); err != nil {
		conn.CloseNow()
		return reply, fmt.Errorf("subscribe: %w", err)
	}
	if since == nil || !reply.Recovered {
		c.epoch, c.last = reply.Epoch, reply.Offset
	}
	return reply, nil
}

type position struct {
	Offset uint64 `json:"offset"`
	Epoch  string `json:"epoch"`
}

// sendTimes maps what a pub frame carries to when its publication was
// scheduled (ns since the run's clock start).
type sendTimes interface {
	lookup(frame []byte) (int64, bool)
}

var bufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// readLoop counts the client's frames until the connection ends; done is
// called when it returns. The end of the run is told by stopped, so that
// the closes that end it are not counted as errors.
func (c *client) readLoop(stopped *atomic.Bool, clock time.Time, times sendTimes, t *tally, done func()) {
	defer done()
	c.read(clock, times, t)
	if !stopped.Load() {
		t.readErrors.Add(1)
	}
}

// read counts the client's frames until the connection ends. Reads take
// no context: one that can be cancelled costs coder/websocket a
// registration per read, and the harness must stay cheap per delivery.
func (c *client) read(clock time.Time, times sendTimes, t *tally) {
	ctx := context.Background()
	for {
		_, r, err := c.conn.Reader(ctx)
		if err != nil {
			return
		}
		buf := bufPool.Get().(*bytes.Buffer)
		buf.Reset()
		_, err = buf.ReadFrom(r)
		if err == nil {
			c.frame(buf.Bytes(), clock, times, t)
		}
		bufPool.Put(buf)
		if err != nil {
			return
		}
	}
}

var pubPrefix = []byte(`{"type":"pub",`)

// frame accounts for one server frame. Pub frames are scanned, not
// decoded: the harness shares the machine with the server and must stay
// cheap per delivery.
func (c *client) frame(b []byte, clock time.Time, times sendTimes, t *tally) {
	if c.cf {
		c.cfFrame(b, clock, times, t)
		return
	}
	if !bytes.HasPrefix(b, pubPrefix) {
		var f controlFrame
		if json.Unmarshal(b, &f) == nil && f.Type == "subscribed" && !f.Recovered {
			// The server announced a loss and where it continues from.
			t.lossFrames.Add(1)
			c.epoch, c.last = f.Epoch, f.Offset
			clear(c.skipped)
		}
		return
	}
	// Every pub frame opens with its channel: one of another client's is
	// misrouted, whatever its offset.
	if c.head == nil {
		c.head = []byte(`"channel":"` + c.channel + `"`)
	}
	if !bytes.HasPrefix(b[len(pubPrefix):], c.head) {
		t.misrouted.Add(1)
		return
	}
	c.pub(b, clock, times, t)
}

// pub accounts for one publication: b holds its offset and data.
func (c *client) pub(b []byte, clock time.Time, times sendTimes, t *tally) {
	now := time.Since(clock)
	off, ok := intAfter(b, `"offset":`)
	if !ok {
		t.unknown.Add(1)
		return
	}
	offset := uint64(off)
	switch {
	case offset <= c.last && c.skipped[offset]:
		// Late, not lost: counted as skipped when it was, it is now out
		// of order instead, and received.
		delete(c.skipped, offset)
		t.gaps.Add(-1)
		t.reordered.Add(1)
		t.received.Add(1)
		return
	case offset <= c.last:
		t.duplicates.Add(1)
		return
	case offset != c.last+1:
		t.gaps.Add(int64(offset - c.last - 1))
		if c.skipped == nil {
			c.skipped = map[uint64]bool{}
		}
		// A few are remembered, to tell late ones: a gap fails the run
		// anyway.
		for o := c.last + 1; o < offset && len(c.skipped) < 1024; o++ {
			c.skipped[o] = true
		}
	}
	c.last = offset
	t.received.Add(1)
	if times == nil {
		return
	}
	sent, ok := times.lookup(b)
	if !ok {
		t.unknown.Add(1)
		return
	}
	t.latency.record(now - time.Duration(sent))
	for {
		last := t.lastReceipt.Load()
		if int64(now) <= last || t.lastReceipt.CompareAndSwap(last, int64(now)) {
			break
		}
	}
}

// intAfter parses the non-negative integer that follows the first key in b.
func intAfter(b []byte, key string) (int64, bool) {
	i := bytes.Index(b, []byte(key))
	if i < 0 {
		return 0, false
	}
	b = b[i+len(key):]
	j := 0
	for j < len(b) && b[j] >= '0' && b[j] <= '9' {
		j++
	}
	n, err := strconv.ParseInt(string(b[:j]), 10, 64)
	return n, err == nil
}

// stampTimes reads the send time the harness put first in the data of
// API publications: {"sent":<ns>,…}.
type stampTimes struct{}

var sentKey = []byte(`"data":{"sent":`)

func (stampTimes) lookup(b []byte) (int64, bool) {
	i := bytes.Index(b, sentKey)
	if i < 0 {
		return 0, false
	}
	return intAfter(b[i:], `"sent":`)
}
