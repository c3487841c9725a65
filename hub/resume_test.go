package hub_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"herald/channels"
	"herald/channels/memory"
	"herald/hub"
	"herald/internal/heraldtest"
	"herald/internal/server"
)

// subscribeSince subscribes with a since position and returns the reply.
func subscribeSince(c *heraldtest.Client, ch string, offset uint64, epoch string) heraldtest.Frame {
	c.Send(map[string]any{"type": "subscribe", "channel": ch, "since": map[string]any{"offset": offset, "epoch": epoch}})
	return c.Expect("subscribed")
}

// expectPubs reads pub frames and checks they carry offsets from..to in order.
func expectPubs(t *testing.T, c *heraldtest.Client, from, to uint64) {
	t.Helper()
	for o := from; o <= to; o++ {
		f := c.Expect("pub")
		if f.Offset() != o {
			t.Fatalf("got offset %d, want %d", f.Offset(), o)
		}
		var d struct{ N uint64 }
		b, _ := json.Marshal(f["data"])
		_ = json.Unmarshal(b, &d)
		if d.N != o {
			t.Fatalf("offset %d carries data %s", o, b)
		}
	}
}

func publishN(t *testing.T, n *heraldtest.Node, ch string, count int) {
	t.Helper()
	for i := 0; i < count; i++ {
		top, err := n.Server.Broker().History(context.Background(), ch, channels.HistoryOptions{})
		if err != nil {
			t.Fatal(err)
		}
		n.PublishDirect(t, ch, fmt.Sprintf(`{"n":%d}`, top.Offset+1))
	}
}

func TestResume_DeliversMissedOnceInOrder(t *testing.T) {
	n := start(t, nil)
	tok := heraldtest.Token(t, "42", "")
	c := heraldtest.Connect(t, n, tok)
	epoch := c.Subscribe("user:42").String("epoch")
	publishN(t, n, "user:42", 3)
	expectPubs(t, c, 1, 3)
	_ = c.Conn.CloseNow()

	publishN(t, n, "user:42", 7)
	c = heraldtest.Connect(t, n, tok)
	f := subscribeSince(c, "user:42", 3, epoch)
	if f["recovered"] != true || f.Offset() != 10 || f.String("epoch") != epoch {
		t.Fatalf("subscribed %v", f)
	}
	expectPubs(t, c, 4, 10)
	publishN(t, n, "user:42", 1)
	expectPubs(t, c, 11, 11)
}

func TestResume_NothingMissedIsRecovered(t *testing.T) {
	n := start(t, nil)
	publishN(t, n, "user:42", 2)
	c := heraldtest.Connect(t, n, heraldtest.Token(t, "42", ""))
	epoch := c.Subscribe("user:42").String("epoch")
	c.Send(map[string]any{"type": "unsubscribe", "channel": "user:42"})
	c.Expect("unsubscribed")
	if f := subscribeSince(c, "user:42", 2, epoch); f["recovered"] != true || f.Offset() != 2 {
		t.Fatalf("subscribed %v", f)
	}
	publishN(t, n, "user:42", 1)
	expectPubs(t, c, 3, 3)
}

func TestResume_WrongEpochIsAGap(t *testing.T) {
	n := start(t, nil)
	publishN(t, n, "user:42", 5)
	c := heraldtest.Connect(t, n, heraldtest.Token(t, "42", ""))
	f := subscribeSince(c, "user:42", 3, "an-old-epoch")
	if f["recovered"] != false || f.String("reason") != channels.ReasonEpochMismatch || f.Offset() != 5 {
		t.Fatalf("subscribed %v", f)
	}
	publishN(t, n, "user:42", 1)
	expectPubs(t, c, 6, 6) // live only: nothing from the other epoch
}

func TestResume_ExpiredOffsetIsAGap(t *testing.T) {
	n := start(t, func(c *server.Config) { c.HistorySize = 5 })
	c := heraldtest.Connect(t, n, heraldtest.Token(t, "42", ""))
	epoch := c.Subscribe("user:42").String("epoch")
	_ = c.Conn.CloseNow()
	publishN(t, n, "user:42", 20)
	c = heraldtest.Connect(t, n, heraldtest.Token(t, "42", ""))
	f := subscribeSince(c, "user:42", 3, epoch)
	if f["recovered"] != false || f.String("reason") != channels.ReasonOffsetExpired || f.Offset() != 20 {
		t.Fatalf("subscribed %v", f)
	}
	publishN(t, n, "user:42", 1)
	expectPubs(t, c, 21, 21)
	// Just inside retention still recovers.
	c2 := heraldtest.Connect(t, n, heraldtest.Token(t, "42", ""))
	if f := subscribeSince(c2, "user:42", 16, epoch); f["recovered"] != true {
		t.Fatalf("subscribed %v", f)
	}
	expectPubs(t, c2, 17, 21)
}

// TestResume_HammerNoGapNoDuplicate subscribes with since while a publisher
// appends as fast as it can: every client must see each offset after its
// since exactly once, in order, through to the end.
func TestResume_HammerNoGapNoDuplicate(t *testing.T) {
	n := start(t, func(c *server.Config) { c.HistorySize = 100000 })
	const ch, total = "user:42", 20000
	epoch := heraldtest.Connect(t, n, heraldtest.Token(t, "42", "")).Subscribe(ch).String("epoch")
	var published atomic.Uint64
	go func() {
		for i := 1; i <= total; i++ {
			r, err := n.Server.Broker().Publish(context.Background(), ch, json.RawMessage(fmt.Sprintf(`{"n":%d}`, i)), channels.PublishOptions{})
			if err != nil {
				t.Error(err)
				return
			}
			published.Store(r.Offset)
		}
	}()

	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for round := 0; round < 4 || published.Load() < total; round++ {
				since := uint64(0)
				if p := published.Load(); p > 0 {
					since = rand.Uint64N(p + 1)
				}
				if err := followTo(n, ch, since, epoch, total); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// followTo subscribes since (since, epoch) and checks offsets since+1..last.
func followTo(n *heraldtest.Node, ch string, since uint64, epoch string, last uint64) error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := dialRaw(ctx, n)
	if err != nil {
		return err
	}
	defer c.close()
	if err := c.send(ctx, map[string]any{"type": "connect", "token": tokenFor("42")}); err != nil {
		return err
	}
	if f, err := c.read(ctx); err != nil || f["type"] != "connected" {
		return fmt.Errorf("connect: %v %v", f, err)
	}
	if err := c.send(ctx, map[string]any{"id": 2, "type": "subscribe", "channel": ch, "since": map[string]any{"offset": since, "epoch": epoch}}); err != nil {
		return err
	}
	f, err := c.read(ctx)
	if err != nil || f["type"] != "subscribed" || f["recovered"] != true {
		return fmt.Errorf("subscribe since %d: %v %v", since, f, err)
	}
	want := since + 1
	for want <= last {
		f, err := c.read(ctx)
		if err != nil {
			return fmt.Errorf("since %d: waiting for %d: %w", since, want, err)
		}
		if f["type"] != "pub" {
			return fmt.Errorf("since %d: unexpected %v", since, f)
		}
		if got := uint64(f["offset"].(float64)); got != want {
			return fmt.Errorf("since %d: got offset %d, want %d", since, got, want)
		}
		want++
	}
	return nil
}

func TestSlowConsumerClosed4009WhileFastOneKeepsUp(t *testing.T) {
	n := start(t, func(c *server.Config) { c.Hub.SendQueueBytes = 256 << 10 })
	fast := heraldtest.Connect(t, n, heraldtest.Token(t, "42", "acme"))
	fast.Subscribe("merchant:acme")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	slow, err := dialSmallReadBuffer(ctx, n)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.close()
	if err := slow.send(ctx, map[string]any{"id": 1, "type": "connect", "token": heraldtest.Token(t, "43", "acme")}); err != nil {
		t.Fatal(err)
	}
	if f, err := slow.read(ctx); err != nil || f["type"] != "connected" {
		t.Fatalf("connect: %v %v", f, err)
	}
	if err := slow.send(ctx, map[string]any{"id": 2, "type": "subscribe", "channel": "merchant:acme"}); err != nil {
		t.Fatal(err)
	}
	if f, err := slow.read(ctx); err != nil || f["type"] != "subscribed" {
		t.Fatalf("subscribe: %v %v", f, err)
	}
	// The slow client reads a frame each 20 ms through a small socket
	// buffer: however slow the machine, the publications (paced by the
	// fast client alone) come faster, and its backlog grows until the
	// queue overflows. Then it reads as fast as it can: the close frame
	// waits behind what the node's socket holds, and the node gives up on
	// a close handshake after 5 s. (A client that reads nothing at all
	// cannot even receive the close frame.)
	overflowed := make(chan struct{})
	slowCode := make(chan websocket.StatusCode, 1)
	go func() {
		for {
			if _, err := slow.read(ctx); err != nil {
				slowCode <- websocket.CloseStatus(err)
				return
			}
			select {
			case <-overflowed:
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	overflows := func() float64 { return n.Metrics(t).Get("herald_send_queue_overflows_total") }
	told := false // overflowed is closed

	// Far more than the slow client's socket buffers and queue hold.
	const total = 20000
	pad := fmt.Sprintf("%01000d", 0)
	var received atomic.Uint64
	got := make(chan error, 1)
	go func() {
		for o := uint64(1); o <= total; o++ {
			f, err := fast.ReadTimeout(20 * time.Second)
			if err != nil {
				got <- fmt.Errorf("fast client at %d: %w", o, err)
				return
			}
			if f.Type() != "pub" || f.Offset() != o {
				got <- fmt.Errorf("fast client: got %v, want offset %d", f["offset"], o)
				return
			}
			received.Store(o)
		}
		got <- nil
	}()
	start := time.Now()
	for i := 1; i <= total; i++ {
		// The fast client keeps up by definition: never more than 100
		// publications (100 KiB) behind. The slow one falls behind freely.
		for uint64(i)-received.Load() > 100 {
			time.Sleep(100 * time.Microsecond)
		}
		n.PublishDirect(t, "merchant:acme", fmt.Sprintf(`{"n":%d,"pad":"%s"}`, i, pad))
		if i%100 == 0 && !told && overflows() > 0 {
			close(overflowed)
			told = true
		}
	}
	publishTime := time.Since(start)
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	if !told {
		n.WaitMetric(t, 1, "herald_send_queue_overflows_total")
		close(overflowed)
	}
	select {
	case code := <-slowCode:
		if code != hub.StatusTooSlow {
			t.Fatalf("slow client close code %d, want 4009", code)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("slow client still connected")
	}
	if got := overflows(); got != 1 {
		t.Fatalf("%v send queues overflowed, want only the slow client's", got)
	}
	t.Logf("published %d × 1 KiB in %v beside a slow subscriber", total, publishTime)
}

// dialSmallReadBuffer is dialRaw on a socket with a fixed 64 KiB receive
// buffer, so that what the client does not read backs up at the node
// soon, whatever the kernel's autotuning would grow the buffer to. (Much
// smaller ones slow even a client that reads at once to a trickle.)
func dialSmallReadBuffer(ctx context.Context, n *heraldtest.Node) (*rawClient, error) {
	var d net.Dialer
	transport := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := d.DialContext(ctx, network, addr)
		if err == nil {
			_ = conn.(*net.TCPConn).SetReadBuffer(64 << 10)
		}
		return conn, err
	}}
	conn, _, err := websocket.Dial(ctx, n.WS(), &websocket.DialOptions{
		Subprotocols: []string{"herald.v1"},
		HTTPClient:   &http.Client{Transport: transport},
	})
	if err != nil {
		return nil, err
	}
	conn.SetReadLimit(-1)
	return &rawClient{conn: conn}, nil
}

// TestResume_BacklogLargerThanTheSendQueue: a client that missed more than
// its send queue holds still gets everything, paced by how fast it reads,
// instead of being closed with 4009 over and over.
func TestResume_BacklogLargerThanTheSendQueue(t *testing.T) {
	n := start(t, func(c *server.Config) {
		c.Hub.SendQueueBytes = 64 << 10
		c.HistorySize = 5000
	})
	c := heraldtest.Connect(t, n, heraldtest.Token(t, "42", ""))
	epoch := c.Subscribe("user:42").String("epoch")
	_ = c.Conn.CloseNow()

	pad := fmt.Sprintf("%0900d", 0)
	for i := 1; i <= 2000; i++ { // ≈ 2 MB missed, 30 times the queue
		n.PublishDirect(t, "user:42", fmt.Sprintf(`{"n":%d,"pad":"%s"}`, i, pad))
	}
	c = heraldtest.Connect(t, n, heraldtest.Token(t, "42", ""))
	f := subscribeSince(c, "user:42", 0, epoch)
	if f["recovered"] != true || f.Offset() != 2000 {
		t.Fatalf("subscribed %v", f)
	}
	// Live publications during the replay come after it, in order.
	go func() {
		for i := 2001; i <= 2100; i++ {
			n.PublishDirect(t, "user:42", fmt.Sprintf(`{"n":%d}`, i))
		}
	}()
	expectPubs(t, c, 1, 2100)
}

// TestSlowConsumer_KernelBufferBounded: what waits for a client that
// reads too slowly is bounded by the send queue and a fixed socket send
// buffer, not by the kernel's autotuning, which grows the send buffer of a
// socket that keeps acknowledging a trickle to megabytes: the server gives
// up on such a client after well under a megabyte and a half, and the
// close frame reaches it.
func TestSlowConsumer_KernelBufferBounded(t *testing.T) {
	n := start(t, func(c *server.Config) { c.Hub.SendQueueBytes = 64 << 10 })
	slow := heraldtest.Connect(t, n, heraldtest.Token(t, "43", "acme"))
	slow.Subscribe("merchant:acme")
	code := make(chan websocket.StatusCode, 1)
	go func() {
		for {
			if _, err := slow.ReadTimeout(30 * time.Second); err != nil {
				code <- websocket.CloseStatus(err)
				return
			}
			time.Sleep(50 * time.Millisecond) // 20 frames/s, a fifth of what comes
		}
	}()
	pad := fmt.Sprintf("%04000d", 0)
	published := 0
	for n.Metrics(t).Get("herald_send_queue_overflows_total") == 0 {
		if published > 1536<<10 {
			t.Fatalf("%d KiB published to a client that reads a fifth of it, and it is still connected", published>>10)
		}
		for range 10 {
			n.PublishDirect(t, "merchant:acme", fmt.Sprintf(`{"pad":"%s"}`, pad))
			published += len(pad)
			time.Sleep(10 * time.Millisecond)
		}
	}
	t.Logf("closed after %d KiB", published>>10)
	select {
	case c := <-code:
		if c != hub.StatusTooSlow {
			t.Errorf("slow client close code %d, want 4009", c)
		}
	case <-time.After(30 * time.Second):
		t.Error("the slow client never learned it was closed")
	}
}

// resetting is an embedded broker whose log is lost at the History call
// numbered at, which first waits for gate: a shared broker that restarted
// empty under a reading node.
type resetting struct {
	mu      sync.Mutex
	cur     *memory.Broker
	handler channels.Handler
	calls   atomic.Int32
	at      atomic.Int32
	gate    chan struct{}
}

func (r *resetting) broker() *memory.Broker {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cur
}

func (r *resetting) Start(h channels.Handler) error {
	r.mu.Lock()
	r.handler = h
	r.mu.Unlock()
	return r.broker().Start(h)
}

func (r *resetting) History(ctx context.Context, ch string, o channels.HistoryOptions) (channels.HistoryResult, error) {
	if r.calls.Add(1) == r.at.Load() {
		<-r.gate
		fresh := memory.New(memory.Options{})
		r.mu.Lock()
		_ = fresh.Start(r.handler)
		r.cur = fresh
		r.mu.Unlock()
	}
	return r.broker().History(ctx, ch, o)
}

func (r *resetting) Publish(ctx context.Context, ch string, d json.RawMessage, o channels.PublishOptions) (channels.PublishResult, error) {
	return r.broker().Publish(ctx, ch, d, o)
}
func (r *resetting) Subscribe(ctx context.Context, ch string) error {
	return r.broker().Subscribe(ctx, ch)
}
func (r *resetting) Unsubscribe(ctx context.Context, ch string) error {
	return r.broker().Unsubscribe(ctx, ch)
}
func (r *resetting) Ready(ctx context.Context) error { return r.broker().Ready(ctx) }
func (r *resetting) Close() error                    { return r.broker().Close() }

// A log reset while a resume is still replaying page after page is a gap
// into the new epoch, and the new epoch's publications follow it: none
// of them may be taken for the old epoch's, already replayed.
func TestResume_EpochResetDuringTheReplay(t *testing.T) {
	r := &resetting{cur: memory.New(memory.Options{}), gate: make(chan struct{})}
	n := start(t, func(c *server.Config) { c.Broker = r })

	c := heraldtest.Connect(t, n, heraldtest.Token(t, "42", ""))
	epoch := c.Subscribe("user:42").String("epoch")
	_ = c.Conn.CloseNow()
	for i := 1; i <= 600; i++ { // more than two pages
		n.PublishDirect(t, "user:42", fmt.Sprintf(`{"n":%d}`, i))
	}

	// The resume's first page comes with the reply; the replay's next
	// read finds the log gone.
	r.at.Store(r.calls.Load() + 2)
	c = heraldtest.Connect(t, n, heraldtest.Token(t, "42", ""))
	if f := subscribeSince(c, "user:42", 0, epoch); f["recovered"] != true || f.Offset() != 600 {
		t.Fatalf("subscribed %v", f)
	}
	close(r.gate)

	var last uint64
	for {
		f := c.Read()
		if f.Type() == "subscribed" {
			if f["recovered"] != false || f.String("reason") != "epoch_mismatch" || f.String("epoch") == epoch || f.Offset() != 0 {
				t.Fatalf("gap %v", f)
			}
			break
		}
		if f.Type() != "pub" || f.Offset() != last+1 {
			t.Fatalf("after %d: %v", last, f)
		}
		last = f.Offset()
	}
	for i := 1; i <= 3; i++ {
		n.PublishDirect(t, "user:42", fmt.Sprintf(`{"n":%d}`, i))
	}
	expectPubs(t, c, 1, 3)
}

// Live publications held while a client's subscriptions recover count
// against one bound for the client, not one per subscription: a client
// resuming two channels that each hold less than the send queue, but
// together more, is closed as too slow.
func TestResume_HeldLiveTrafficIsBoundedPerClient(t *testing.T) {
	n := start(t, func(c *server.Config) {
		c.Hub.SendQueueBytes = 64 << 10
		c.HistorySize = 1000
	})
	pad := fmt.Sprintf("%0900d", 0)
	epochs := map[string]string{}
	for _, ch := range []string{"user:42", "merchant:m1"} {
		for i := 1; i <= 1000; i++ { // ≈ 900 KB missed each, past the socket's buffers: the replays wait for room
			epochs[ch] = n.PublishDirect(t, ch, fmt.Sprintf(`{"n":%d,"pad":"%s"}`, i, pad)).Epoch
		}
	}
	// A client that reads nothing: its replays stay under way.
	conn, _ := upgradeRaw(t, n, "")
	_ = conn.(*net.TCPConn).SetReadBuffer(4 << 10)
	frames := wsFrame(1, fmt.Appendf(nil, `{"id":1,"type":"connect","token":%q}`, heraldtest.Token(t, "42", "m1")))
	for i, ch := range []string{"user:42", "merchant:m1"} {
		frames = append(frames, wsFrame(1, fmt.Appendf(nil,
			`{"id":%d,"type":"subscribe","channel":%q,"since":{"offset":0,"epoch":%q}}`, i+2, ch, epochs[ch]))...)
	}
	if _, err := conn.Write(frames); err != nil {
		t.Fatal(err)
	}
	n.WaitMetric(t, 1, "herald_subscriptions", "namespace", "user")
	n.WaitMetric(t, 1, "herald_subscriptions", "namespace", "merchant")
	// 40 KiB held for each: under the queue's 64 KiB, 80 together.
	big := fmt.Sprintf(`{"pad":"%040960d"}`, 0)
	n.PublishDirect(t, "user:42", big)
	if got := n.Metrics(t).Get("herald_closes_total", "code", "4009"); got != 0 {
		t.Fatalf("closed after one channel's 40 KiB: %v", got)
	}
	n.PublishDirect(t, "merchant:m1", big)
	n.WaitMetric(t, 1, "herald_closes_total", "code", "4009")
}
