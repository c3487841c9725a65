package hub

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"herald/auth"
	"herald/channels"
	"herald/channels/memory"
)

// gatedBroker is an embedded broker whose History read of one channel
// numbered at (counting from 1) waits until the test opens the gate
// (before reading, or after when after is set), and which records the
// Limit of every read of that channel.
type gatedBroker struct {
	*memory.Broker
	channel string
	calls   atomic.Int32
	at      atomic.Int32
	after   bool
	entered chan struct{}
	gate    chan struct{}
	open    sync.Once

	mu     sync.Mutex
	limits []int
}

func newGatedBroker(channel string, opts memory.Options) *gatedBroker {
	return &gatedBroker{Broker: memory.New(opts), channel: channel, entered: make(chan struct{}, 1), gate: make(chan struct{})}
}

func (b *gatedBroker) History(ctx context.Context, ch string, o channels.HistoryOptions) (channels.HistoryResult, error) {
	if ch == b.channel {
		b.mu.Lock()
		b.limits = append(b.limits, o.Limit)
		b.mu.Unlock()
		if b.calls.Add(1) == b.at.Load() {
			var res channels.HistoryResult
			var err error
			if b.after {
				res, err = b.Broker.History(ctx, ch, o)
			}
			b.entered <- struct{}{}
			select {
			case <-b.gate:
			case <-ctx.Done():
				return channels.HistoryResult{}, ctx.Err()
			}
			if b.after {
				return res, err
			}
		}
	}
	return b.Broker.History(ctx, ch, o)
}

// armAfter arms the gate at the next read but skip ones.
func (b *gatedBroker) armAfter(skip int) { b.at.Store(b.calls.Load() + int32(skip) + 1) }

func (b *gatedBroker) release() { b.open.Do(func() { close(b.gate) }) }

func (b *gatedBroker) waitEntered(t *testing.T) {
	t.Helper()
	select {
	case <-b.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the gated history read never came")
	}
}

// ttlToken takes a token "sub" or "sub:ttl" (a time.Duration; 1h when
// absent) for that user, with merchant:fill.
type ttlToken struct{}

func (ttlToken) Verify(tok string) (*auth.Claims, error) {
	sub, ttl, _ := strings.Cut(tok, ":")
	d := time.Hour
	if ttl != "" {
		var err error
		if d, err = time.ParseDuration(ttl); err != nil {
			return nil, err
		}
	}
	c := auth.NewClaims(sub, "fill", nil, d, time.Now())
	return &c, nil
}

// testHub serves a hub on b (started here) until the test ends.
func testHub(t *testing.T, b *gatedBroker, opts Options) (*Hub, *httptest.Server) {
	t.Helper()
	opts.Broker, opts.Verifier = b, ttlToken{}
	h, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(h); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(func() { b.release(); h.Close(); srv.Close(); b.Close() })
	return h, srv
}

// dialTest connects with token in the upgrade; readBuffer, when not 0, is
// the socket's receive buffer, so that what the client does not read backs
// up at the hub soon. It returns the TCP connection too.
func dialTest(t *testing.T, srv *httptest.Server, token string, readBuffer int) (*websocket.Conn, *net.TCPConn) {
	t.Helper()
	var tcp *net.TCPConn
	var d net.Dialer
	transport := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := d.DialContext(ctx, network, addr)
		if err == nil {
			tcp = conn.(*net.TCPConn)
			if readBuffer > 0 {
				_ = tcp.SetReadBuffer(readBuffer)
			}
		}
		return conn, err
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http"), &websocket.DialOptions{
		Subprotocols: []string{Subprotocol},
		HTTPHeader:   http.Header{"Authorization": {"Bearer " + token}},
		HTTPClient:   &http.Client{Transport: transport},
	})
	if err != nil {
		t.Fatal(err)
	}
	conn.SetReadLimit(-1)
	t.Cleanup(func() { _ = conn.CloseNow() })
	return conn, tcp
}

func writeJSON(t *testing.T, conn *websocket.Conn, s string, args ...any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := conn.Write(ctx, websocket.MessageText, fmt.Appendf(nil, s, args...)); err != nil {
		t.Fatal(err)
	}
}

type testFrame struct {
	Type      string
	ID        int64
	Channel   string
	Offset    uint64
	Recovered bool
	Reason    string
	Data      struct{ N uint64 }
}

func readJSON(t *testing.T, conn *websocket.Conn) testFrame {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, b, err := conn.Read(ctx)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	var f testFrame
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatalf("frame %q: %v", b, err)
	}
	return f
}

// onlyClient waits for the hub's one client.
func onlyClient(t *testing.T, h *Hub) *client {
	t.Helper()
	for range 1000 {
		h.mu.RLock()
		for c := range h.clients {
			h.mu.RUnlock()
			return c
		}
		h.mu.RUnlock()
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatal("no client")
	return nil
}

func publishData(t *testing.T, b channels.Broker, ch, data string) channels.PublishResult {
	t.Helper()
	r, err := b.Publish(context.Background(), ch, json.RawMessage(data), channels.PublishOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// fillQueue publishes to merchant:fill, which the client of c subscribed
// to and does not read, until at least want bytes wait in its queue.
func fillQueue(t *testing.T, b channels.Broker, c *client, want int) {
	t.Helper()
	pad := fmt.Sprintf(`{"pad":"%0900d"}`, 0)
	for i := 0; ; i++ {
		c.mu.Lock()
		q := c.queued
		c.mu.Unlock()
		if q >= want {
			return
		}
		if i == 5000 {
			t.Fatalf("the queue never filled: %d bytes", q)
		}
		publishData(t, b, "merchant:fill", pad)
		time.Sleep(200 * time.Microsecond)
	}
}

// A recovering subscription holds live publications until it goes live.
// Once the client is closing (here closed for holding too much) they will
// never be sent: none are held any more, rather than a busy channel's
// piling up until the session's cleanup, seconds later.
func TestRecovery_NothingHeldForAClosingClient(t *testing.T) {
	b := newGatedBroker("user:42", memory.Options{})
	h, srv := testHub(t, b, Options{SendQueueBytes: 64 << 10})
	epoch := publishData(t, b, "user:42", `{"n":1}`).Epoch
	conn, _ := dialTest(t, srv, "42", 0)
	c := onlyClient(t, h)

	// The resume's read waits: the subscription holds what comes.
	b.armAfter(0)
	writeJSON(t, conn, `{"id":1,"type":"subscribe","channel":"user:42","since":{"offset":0,"epoch":%q}}`, epoch)
	b.waitEntered(t)
	closing := func() bool { c.mu.Lock(); defer c.mu.Unlock(); return c.closing }
	pad := fmt.Sprintf(`{"pad":"%01000d"}`, 0)
	for i := 0; !closing(); i++ {
		if i == 100 {
			t.Fatal("100 KiB held for a client with a 64 KiB queue, and it is not closed")
		}
		publishData(t, b, "user:42", pad)
	}
	for range 50 {
		publishData(t, b, "user:42", pad)
	}

	h.mu.RLock()
	hc := h.chans["user:42"]
	h.mu.RUnlock()
	hc.mu.Lock()
	held := 0
	for s := range hc.subs {
		held += len(s.pending)
	}
	hc.mu.Unlock()
	c.mu.Lock()
	heldBytes := c.pendingBytes
	c.mu.Unlock()
	if held != 0 || heldBytes != 0 {
		t.Errorf("a closing client holds %d publications (%d bytes counted)", held, heldBytes)
	}
}

// A resume that cannot queue anything yet leaves the missed publications
// to a replay that waits for room. Unsubscribing ends that replay: a
// client that keeps its queue full and subscribes and unsubscribes over
// and over does not pile up replays. Nor does each resume read a page of
// the log it cannot queue.
func TestRecovery_UnsubscribeEndsAWaitingReplay(t *testing.T) {
	b := newGatedBroker("user:42", memory.Options{})
	h, srv := testHub(t, b, Options{SendQueueBytes: 64 << 10})
	var epoch string
	for i := 1; i <= 10; i++ {
		epoch = publishData(t, b, "user:42", fmt.Sprintf(`{"n":%d}`, i)).Epoch
	}
	conn, _ := dialTest(t, srv, "42", 4<<10)
	c := onlyClient(t, h)
	writeJSON(t, conn, `{"id":1,"type":"subscribe","channel":"merchant:fill"}`)
	fillQueue(t, b, c, 34<<10) // over half: no missed publication fits

	const pairs = 20
	for i := range pairs {
		writeJSON(t, conn, `{"id":%d,"type":"subscribe","channel":"user:42","since":{"offset":0,"epoch":%q}}`, 2*i+2, epoch)
		writeJSON(t, conn, `{"id":%d,"type":"unsubscribe","channel":"user:42"}`, 2*i+3)
	}
	replays := func() int {
		buf := make([]byte, 1<<20)
		return strings.Count(string(buf[:runtime.Stack(buf, true)]), "hub.(*client).replay(")
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		h.mu.RLock()
		_, subscribed := h.chans["user:42"]
		h.mu.RUnlock()
		if b.calls.Load() == pairs && !subscribed && replays() == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %d of %d resumes and unsubscribes, %d replays wait", b.calls.Load(), pairs, replays())
		}
		time.Sleep(10 * time.Millisecond)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, l := range b.limits {
		if l != 1 {
			t.Fatalf("a resume with no room read pages of %v publications", b.limits)
		}
	}
}

// The expiry timer may fire just as a refresh resets it: its callback
// then runs after the refresh, and must find the token refreshed rather
// than close the session with 4008.
func TestRecovery_ExpiryRacingARefreshKeepsTheSession(t *testing.T) {
	b := newGatedBroker("user:42", memory.Options{})
	h, srv := testHub(t, b, Options{})
	conn, _ := dialTest(t, srv, "42:1h", 0)
	if f := readJSON(t, conn); f.Type != "connected" {
		t.Fatalf("got %+v", f)
	}
	writeJSON(t, conn, `{"id":1,"type":"refresh","token":"42:2h"}`)
	if f := readJSON(t, conn); f.Type != "refreshed" {
		t.Fatalf("got %+v", f)
	}
	c := onlyClient(t, h)
	c.expire() // as the timer's callback, running as the refresh reset it
	writeJSON(t, conn, `{"id":2,"type":"ping"}`)
	if f := readJSON(t, conn); f.Type != "pong" {
		t.Fatalf("got %+v", f)
	}
}

// A session closed right after its connected frame was written must not
// arm the ping timer, which would keep the closed client for 25 s.
func TestRecovery_NoPingTimerForAClosingClient(t *testing.T) {
	b := newGatedBroker("user:42", memory.Options{})
	h, _ := testHub(t, b, Options{})
	c := newClient(h, nil, netip.Addr{})
	c.markClosing(StatusShuttingDown)
	armed := c.startPinging()
	c.mu.Lock()
	timer := c.pingTimer
	c.mu.Unlock()
	if timer != nil {
		timer.Stop()
	}
	if armed || timer != nil {
		t.Error("the ping timer was armed for a closing client")
	}
}

// When the log is trimmed past where a replay stands, the live
// publications held since the resume began are not lost with it: the gap
// announced covers only what neither the log nor the node has, and the
// held publications follow it.
func TestRecovery_TrimmedLogGapStopsAtTheHeldPublications(t *testing.T) {
	b := newGatedBroker("user:42", memory.Options{HistorySize: 300})
	_, srv := testHub(t, b, Options{})
	var epoch string
	for i := 1; i <= 300; i++ {
		epoch = publishData(t, b, "user:42", fmt.Sprintf(`{"n":%d}`, i)).Epoch
	}
	conn, _ := dialTest(t, srv, "42", 0)
	if f := readJSON(t, conn); f.Type != "connected" {
		t.Fatalf("got %+v", f)
	}
	// The reply brings the first page (256); the replay's read of the
	// rest waits while 301…700 are published, held, and trim the log to
	// 401…700.
	b.armAfter(1)
	writeJSON(t, conn, `{"id":1,"type":"subscribe","channel":"user:42","since":{"offset":0,"epoch":%q}}`, epoch)
	b.waitEntered(t)
	for i := 301; i <= 700; i++ {
		publishData(t, b, "user:42", fmt.Sprintf(`{"n":%d}`, i))
	}
	b.release()

	if f := readJSON(t, conn); f.Type != "subscribed" || !f.Recovered || f.Offset != 300 {
		t.Fatalf("got %+v", f)
	}
	expect := func(from, to uint64) {
		t.Helper()
		for o := from; o <= to; o++ {
			if f := readJSON(t, conn); f.Type != "pub" || f.Offset != o || f.Data.N != o {
				t.Fatalf("got %+v, want pub %d", f, o)
			}
		}
	}
	expect(1, 256)
	if f := readJSON(t, conn); f.Type != "subscribed" || f.Recovered || f.Offset != 300 || f.Reason != channels.ReasonOffsetExpired {
		t.Fatalf("got %+v, want a gap up to 300", f)
	}
	expect(301, 700)
}

// Live publications held during a resume may take up to the whole send
// queue; the missed ones queued before them up to half. Going live must
// not queue them all at once beside those, closing a client that reads
// as too slow: they are queued once there is room for them.
func TestRecovery_HandOverWaitsForRoom(t *testing.T) {
	b := newGatedBroker("user:42", memory.Options{})
	h, srv := testHub(t, b, Options{SendQueueBytes: 64 << 10})
	pad := fmt.Sprintf("%01000d", 0)
	var epoch string
	for i := 1; i <= 20; i++ { // ≈ 21 KiB missed: one page
		epoch = publishData(t, b, "user:42", fmt.Sprintf(`{"n":%d,"pad":%q}`, i, pad)).Epoch
	}
	conn, tcp := dialTest(t, srv, "42", 4<<10)
	c := onlyClient(t, h)
	writeJSON(t, conn, `{"id":1,"type":"subscribe","channel":"merchant:fill"}`)
	fillQueue(t, b, c, 2<<10) // the socket is full: what is queued stays

	// Once the resume read the log, 45 KiB arrive and are held: under
	// the 64 KiB they may take, but not beside the missed ones.
	b.after = true
	b.armAfter(0)
	writeJSON(t, conn, `{"id":2,"type":"subscribe","channel":"user:42","since":{"offset":0,"epoch":%q}}`, epoch)
	b.waitEntered(t)
	for i := 21; i <= 65; i++ {
		publishData(t, b, "user:42", fmt.Sprintf(`{"n":%d,"pad":%q}`, i, pad))
	}
	b.release()
	time.Sleep(200 * time.Millisecond)

	// The client reads now, and gets everything.
	_ = tcp.SetReadBuffer(1 << 20)
	next := uint64(1)
	for next <= 65 {
		f := readJSON(t, conn)
		if f.Channel != "user:42" {
			continue
		}
		switch {
		case f.Type == "subscribed" && f.ID == 2 && f.Recovered && next == 1:
		case f.Type == "pub" && f.Offset == next && f.Data.N == next:
			next++
		default:
			t.Fatalf("got %+v, want pub %d", f, next)
		}
	}
}

// A replay that gives up (its subscription ended) must not leave its own
// limit as the one every other waiter is woken at: another channel's
// replay, waiting for less room, would then wait for an empty queue.
func TestRecovery_AnAbandonedWaitDoesNotHoldBackOthers(t *testing.T) {
	b := newGatedBroker("user:42", memory.Options{})
	h, _ := testHub(t, b, Options{})
	c := newClient(h, nil, netip.Addr{})
	c.mu.Lock()
	c.queued = 100
	c.mu.Unlock()

	abandoned := make(chan struct{})
	first := make(chan bool)
	go func() { first <- c.waitRoom(0, abandoned) }() // for an empty queue
	second := make(chan bool)
	go func() { second <- c.waitRoom(50, nil) }() // for 50 bytes
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if strings.Count(goroutines(), "hub.(*client).waitRoom(") == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the two waits never both began")
		}
	}
	close(abandoned)
	if <-first {
		t.Fatal("the abandoned wait reported room")
	}
	c.mu.Lock()
	c.written(60) // 40 bytes left: room for the second
	c.mu.Unlock()
	select {
	case ok := <-second:
		if !ok {
			t.Fatal("the second wait reported a close")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the second wait was not woken with room for it")
	}
}

func goroutines() string {
	buf := make([]byte, 1<<20)
	return string(buf[:runtime.Stack(buf, true)])
}
