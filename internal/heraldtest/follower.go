package heraldtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/coder/websocket"
)

// Follower is a client that follows one channel across reconnects, the
// way a careful application does: it remembers the last offset and epoch it
// received and resumes from them on any node. It checks the protocol's
// promise as it goes: within an epoch every offset is the previous one plus
// one, unless a subscribed frame with recovered:false announced a gap.
// Its methods are safe for use from several goroutines; it never fails a
// test by itself, it reports.
type Follower struct {
	Channel string
	Token   string

	mu        sync.Mutex
	epoch     string
	last      uint64
	delivered int
	gaps      []string
	problems  []error
	resumes   int
	recovered int
	conn      *websocket.Conn
	closed    chan struct{}
	progress  chan struct{}
	// ReadDelay slows the reader down after each publication, to make a
	// slow consumer.
	ReadDelay time.Duration
	// HTTPClient dials the websocket [http.DefaultClient]; a client with a
	// tiny receive buffer makes a slow consumer show up quickly.
	HTTPClient *http.Client
	// Record keeps the "id" field of every publication's data, by offset
	// (see Received).
	Record   bool
	received map[uint64]string
	first    uint64 // offset of the first subscription: nothing before it is owed
	started  bool
	// lastClose is the close code that ended the last connection (-1: none).
	lastClose websocket.StatusCode
}

// NewFollower returns a follower of channel that authenticates with token.
func NewFollower(channel, token string) *Follower {
	return &Follower{Channel: channel, Token: token, progress: make(chan struct{}, 1)}
}

// Connect dials node, authenticates, subscribes (with since once it has
// received anything) and reads in the background until the connection ends.
func (f *Follower) Connect(ctx context.Context, n *Node) error {
	conn, _, err := websocket.Dial(ctx, n.WS(), &websocket.DialOptions{Subprotocols: []string{"herald.v1"}, HTTPClient: f.HTTPClient})
	if err != nil {
		return err
	}
	conn.SetReadLimit(-1)
	write := func(v any) error {
		b, _ := json.Marshal(v)
		return conn.Write(ctx, websocket.MessageText, b)
	}
	read := func() (map[string]any, error) {
		_, b, err := conn.Read(ctx)
		if err != nil {
			return nil, err
		}
		var m map[string]any
		return m, json.Unmarshal(b, &m)
	}
	fail := func(err error) error { _ = conn.CloseNow(); return err }
	if err := write(map[string]any{"id": 1, "type": "connect", "token": f.Token}); err != nil {
		return fail(err)
	}
	if m, err := read(); err != nil || m["type"] != "connected" {
		return fail(fmt.Errorf("connect: %v %v", m, err))
	}
	sub := map[string]any{"id": 2, "type": "subscribe", "channel": f.Channel}
	f.mu.Lock()
	resuming := f.epoch != ""
	if resuming {
		sub["since"] = map[string]any{"offset": f.last, "epoch": f.epoch}
	}
	f.mu.Unlock()
	if err := write(sub); err != nil {
		return fail(err)
	}
	m, err := read()
	if err != nil || m["type"] != "subscribed" {
		return fail(fmt.Errorf("subscribe: %v %v", m, err))
	}
	f.mu.Lock()
	if resuming {
		f.resumes++
	}
	f.subscribed(m)
	if !f.started {
		f.started, f.first = true, f.last
	}
	f.conn = conn
	closed := make(chan struct{})
	f.closed = closed
	f.mu.Unlock()
	go func() {
		defer close(closed)
		for {
			_, b, err := conn.Read(context.Background())
			if err != nil {
				f.mu.Lock()
				f.lastClose = websocket.CloseStatus(err)
				f.mu.Unlock()
				return
			}
			var m map[string]any
			if err := json.Unmarshal(b, &m); err != nil {
				f.problem(fmt.Errorf("frame not JSON: %q", b))
				continue
			}
			f.mu.Lock()
			switch m["type"] {
			case "pub":
				f.pub(m)
			case "subscribed":
				f.subscribed(m)
			}
			f.mu.Unlock()
			select {
			case f.progress <- struct{}{}:
			default:
			}
			if f.ReadDelay > 0 {
				time.Sleep(f.ReadDelay)
			}
		}
	}()
	return nil
}

// subscribed takes a subscribed frame (reply or announcement); f.mu held.
func (f *Follower) subscribed(m map[string]any) {
	epoch, _ := m["epoch"].(string)
	offset := uint64(m["offset"].(float64))
	if m["recovered"] == true {
		f.recovered++
		if epoch != f.epoch || offset < f.last {
			f.problems = append(f.problems, fmt.Errorf("%s: recovered:true but position %d/%s is behind %d/%s", f.Channel, offset, epoch, f.last, f.epoch))
		}
		return // the missed publications follow
	}
	if f.epoch != "" {
		reason, _ := m["reason"].(string)
		f.gaps = append(f.gaps, reason)
	}
	f.epoch, f.last = epoch, offset
}

// pub takes a publication; f.mu held.
func (f *Follower) pub(m map[string]any) {
	epoch, _ := m["epoch"].(string)
	offset := uint64(m["offset"].(float64))
	if epoch != f.epoch || offset != f.last+1 {
		f.problems = append(f.problems, fmt.Errorf("%s: got %d/%s after %d/%s without an announced gap", f.Channel, offset, epoch, f.last, f.epoch))
	}
	f.epoch, f.last = epoch, offset
	f.delivered++
	if f.Record {
		if f.received == nil {
			f.received = map[uint64]string{}
		}
		data, _ := m["data"].(map[string]any)
		id, _ := data["id"].(string)
		f.received[offset] = id
	}
}

// Received returns the offset the follower started after and, when Record
// is set, the data ids it received by offset.
func (f *Follower) Received() (first uint64, ids map[uint64]string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[uint64]string, len(f.received))
	for k, v := range f.received {
		out[k] = v
	}
	return f.first, out
}

func (f *Follower) problem(err error) {
	f.mu.Lock()
	f.problems = append(f.problems, err)
	f.mu.Unlock()
}

// LastClose returns the close code the server ended the last connection
// with, or -1.
func (f *Follower) LastClose() websocket.StatusCode {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lastClose
}

// Drop closes the connection abruptly, as a network failure would.
func (f *Follower) Drop() {
	f.mu.Lock()
	conn, closed := f.conn, f.closed
	f.conn = nil
	f.mu.Unlock()
	if conn != nil {
		_ = conn.CloseNow()
		<-closed
	}
}

// Done returns a channel closed when the current connection ended.
func (f *Follower) Done() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed == nil {
		c := make(chan struct{})
		close(c)
		return c
	}
	return f.closed
}

// Position returns the last offset and epoch received.
func (f *Follower) Position() (uint64, string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.last, f.epoch
}

// WaitFor waits until offset (in the current epoch) was received.
func (f *Follower) WaitFor(offset uint64, timeout time.Duration) error {
	return f.WaitForPosition(offset, "", timeout)
}

// WaitForPosition waits until offset was received in epoch (any epoch
// when empty).
func (f *Follower) WaitForPosition(offset uint64, epoch string, timeout time.Duration) error {
	deadline := time.After(timeout)
	for {
		f.mu.Lock()
		last, current, n := f.last, f.epoch, len(f.problems)
		f.mu.Unlock()
		if last >= offset && (epoch == "" || epoch == current) {
			return nil
		}
		if n > 0 {
			return f.Err()
		}
		select {
		case <-f.progress:
		case <-time.After(20 * time.Millisecond):
		case <-deadline:
			return fmt.Errorf("%s: offset %d not received within %v (at %d)", f.Channel, offset, timeout, last)
		}
	}
}

// Err returns the protocol violations seen, if any.
func (f *Follower) Err() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return errors.Join(f.problems...)
}

// Stats are what a follower saw.
type Stats struct {
	Delivered, Resumes, Recovered int
	Gaps                          []string
}

// Stats returns counts of what the follower saw.
func (f *Follower) Stats() Stats {
	f.mu.Lock()
	defer f.mu.Unlock()
	return Stats{Delivered: f.delivered, Resumes: f.resumes, Recovered: f.recovered, Gaps: append([]string(nil), f.gaps...)}
}
