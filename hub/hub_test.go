package hub_test

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"herald/auth"
	"herald/hub"
	"herald/internal/heraldtest"
	"herald/internal/server"
)

func start(t *testing.T, mod func(*server.Config)) *heraldtest.Node {
	t.Helper()
	cfg := heraldtest.Config()
	if mod != nil {
		mod(&cfg)
	}
	return heraldtest.Start(t, cfg)
}

func TestConnect_HeaderTokenIsAcknowledgedUnprompted(t *testing.T) {
	n := start(t, nil)
	c := heraldtest.DialHeader(t, n, http.Header{"Authorization": {"Bearer " + heraldtest.Token(t, "42", "")}})
	f := c.Expect("connected")
	if _, ok := f["id"]; ok {
		t.Fatalf("unprompted connected carries an id: %v", f)
	}
	if f.String("client") == "" || f.String("node") != "test-node" || f["expires"].(float64) < float64(time.Now().Unix()) {
		t.Fatalf("connected frame %v", f)
	}
	if c.Conn.Subprotocol() != hub.Subprotocol {
		t.Fatalf("subprotocol %q", c.Conn.Subprotocol())
	}
}

func TestConnect_FirstFrameRepliesWithItsID(t *testing.T) {
	n := start(t, nil)
	c := heraldtest.Dial(t, n)
	c.Send(map[string]any{"id": 1, "type": "connect", "token": heraldtest.Token(t, "42", "")})
	f := c.Expect("connected")
	if f["id"] != float64(1) {
		t.Fatalf("connected frame %v", f)
	}
}

func TestConnect_BadHeaderTokenIs401BeforeUpgrade(t *testing.T) {
	n := start(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, resp, err := websocket.Dial(ctx, n.WS(), &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer nope"}}})
	if err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("dial with a bad token: err %v, resp %v", err, resp)
	}
}

func TestConnect_Refusals(t *testing.T) {
	n := start(t, func(c *server.Config) { c.Hub.AuthTimeout = 300 * time.Millisecond })
	cases := map[string]func(c *heraldtest.Client){
		"silence":           func(*heraldtest.Client) {},
		"other first frame": func(c *heraldtest.Client) { c.Send(map[string]any{"type": "ping"}) },
		"bad token":         func(c *heraldtest.Client) { c.Send(map[string]any{"type": "connect", "token": "x.y.z"}) },
		"expired token": func(c *heraldtest.Client) {
			c.Send(map[string]any{"type": "connect", "token": heraldtest.TokenTTL(t, -time.Minute, "42", "")})
		},
		"not JSON": func(c *heraldtest.Client) { c.SendRaw([]byte("hello")) },
	}
	for name, act := range cases {
		t.Run(name, func(t *testing.T) {
			c := heraldtest.Dial(t, n)
			act(c)
			if code := c.CloseStatus(5 * time.Second); code != hub.StatusUnauthorized {
				t.Fatalf("close code %d, want 4001", code)
			}
		})
	}
}

func TestSubscribe_LiveFromCurrentOffset(t *testing.T) {
	n := start(t, nil)
	n.Publish(t, "user:42", map[string]any{"before": true})
	c := heraldtest.Connect(t, n, heraldtest.Token(t, "42", ""))
	id := c.Send(map[string]any{"type": "subscribe", "channel": "user:42"})
	f := c.Expect("subscribed")
	if f["id"] != float64(id) || f.Offset() != 1 || f["recovered"] != false || f.String("epoch") == "" || f.String("channel") != "user:42" {
		t.Fatalf("subscribed %v", f)
	}
	n.Publish(t, "user:42", map[string]any{"amount": "0.0623414132"})
	p := c.Expect("pub")
	if p.Offset() != 2 || p.String("channel") != "user:42" || p.String("epoch") != f.String("epoch") {
		t.Fatalf("pub %v", p)
	}
	if d := p["data"].(map[string]any); d["amount"] != "0.0623414132" {
		t.Fatalf("data %v", d)
	}
	if _, ok := p["id"]; ok {
		t.Fatal("pub carries an id")
	}
}

func TestSubscribe_EmptyChannelIsOffsetZero(t *testing.T) {
	n := start(t, nil)
	c := heraldtest.Connect(t, n, heraldtest.Token(t, "42", ""))
	if f := c.Subscribe("user:42"); f.Offset() != 0 {
		t.Fatalf("subscribed %v", f)
	}
}

func TestSubscribe_Errors(t *testing.T) {
	n := start(t, func(c *server.Config) { c.Hub.MaxSubscriptions = 3 })
	c := heraldtest.Connect(t, n, heraldtest.Token(t, "42", "acme", "user:7", "merchant:shared"))
	for _, ch := range []string{"user:42", "merchant:acme", "alerts:acme"} {
		c.Subscribe(ch)
	}
	cases := []struct {
		frame map[string]any
		code  string
	}{
		{map[string]any{"type": "subscribe", "channel": "user:42"}, "already_subscribed"},
		{map[string]any{"type": "subscribe", "channel": "user:7"}, "too_many_subscriptions"},
		{map[string]any{"type": "subscribe", "channel": "user:43"}, "forbidden"},
		{map[string]any{"type": "subscribe", "channel": "merchant:other"}, "forbidden"},
		{map[string]any{"type": "subscribe", "channel": "alerts:other"}, "forbidden"},
		{map[string]any{"type": "subscribe", "channel": "user:a b"}, "bad_request"},
		{map[string]any{"type": "subscribe", "channel": "users:42"}, "bad_request"},
		{map[string]any{"type": "subscribe", "channel": "user:42", "since": map[string]any{"offset": 1}}, "bad_request"},
		{map[string]any{"type": "subscribe", "channel": "user:42", "since": "yesterday"}, "bad_request"},
		{map[string]any{"type": "unsubscribe", "channel": "user:7"}, "not_subscribed"},
		{map[string]any{"type": "history", "channel": "user:42", "limit": 0}, "bad_request"},
		{map[string]any{"type": "history", "channel": "user:42", "limit": 1001}, "bad_request"},
		{map[string]any{"type": "history", "channel": "user:43"}, "forbidden"},
		{map[string]any{"type": "connect", "token": "x"}, "bad_request"},
		{map[string]any{"type": "ping", "id": "seven"}, "bad_request"},
	}
	for _, tc := range cases {
		c.Send(tc.frame)
		f := c.Expect("error")
		if f.String("code") != tc.code || f.String("message") == "" {
			t.Errorf("%v: got %v, want code %s", tc.frame, f, tc.code)
		}
	}
	// The connection survived every refusal.
	c.Send(map[string]any{"type": "unsubscribe", "channel": "alerts:acme"})
	c.Expect("unsubscribed")
	c.Subscribe("user:7")
}

func TestUnsubscribe_StopsDelivery(t *testing.T) {
	n := start(t, nil)
	c := heraldtest.Connect(t, n, heraldtest.Token(t, "42", ""))
	c.Subscribe("user:42")
	id := c.Send(map[string]any{"type": "unsubscribe", "channel": "user:42"})
	f := c.Expect("unsubscribed")
	if f["id"] != float64(id) || f.String("channel") != "user:42" {
		t.Fatalf("unsubscribed %v", f)
	}
	n.Publish(t, "user:42", 1)
	c.Send(map[string]any{"type": "ping"})
	c.Expect("pong") // nothing was delivered in between
}

func TestPing(t *testing.T) {
	n := start(t, nil)
	c := heraldtest.Connect(t, n, heraldtest.Token(t, "42", ""))
	c.Send(map[string]any{"id": 6, "type": "ping"})
	if f := c.Expect("pong"); f["id"] != float64(6) {
		t.Fatalf("pong %v", f)
	}
}

func TestHistory(t *testing.T) {
	n := start(t, nil)
	for i := 1; i <= 5; i++ {
		n.Publish(t, "user:42", map[string]any{"i": i})
	}
	c := heraldtest.Connect(t, n, heraldtest.Token(t, "42", ""))
	c.Send(map[string]any{"id": 4, "type": "history", "channel": "user:42", "limit": 3})
	f := c.Expect("history")
	pubs := f["publications"].([]any)
	if f["id"] != float64(4) || f.Offset() != 5 || len(pubs) != 3 || f.String("epoch") == "" {
		t.Fatalf("history %v", f)
	}
	for i, p := range pubs {
		p := p.(map[string]any)
		if p["offset"] != float64(3+i) || p["data"].(map[string]any)["i"] != float64(3+i) {
			t.Fatalf("publication %d: %v", i, p)
		}
	}
	c.Send(map[string]any{"type": "history", "channel": "user:42", "since": map[string]any{"offset": 3, "epoch": f.String("epoch")}})
	f = c.Expect("history")
	if pubs := f["publications"].([]any); len(pubs) != 2 || f["recovered"] != true {
		t.Fatalf("history since 3: %v", f)
	}
	c.Send(map[string]any{"type": "history", "channel": "user:42", "since": map[string]any{"offset": 3, "epoch": "nope"}})
	if f = c.Expect("history"); f["recovered"] != false || f.String("reason") != "epoch_mismatch" {
		t.Fatalf("history with a wrong epoch: %v", f)
	}
}

// A history reply is one frame; one larger than the send queue used to
// close the client that asked for it as too slow. It now carries what
// fits in half the queue, says it was truncated, and the client can page
// through the rest with since, without a gap or a repeat.
func TestHistory_LargerThanTheSendQueueIsTruncated(t *testing.T) {
	n := start(t, func(c *server.Config) { c.Hub.SendQueueBytes = 64 << 10 })
	pad := strings.Repeat("x", 900)
	for i := 1; i <= 200; i++ { // ≈ 185 KB, three times the queue
		n.PublishDirect(t, "user:42", fmt.Sprintf(`{"n":%d,"pad":%q}`, i, pad))
	}
	c := heraldtest.Connect(t, n, heraldtest.Token(t, "42", ""))
	// Without since: the newest that fit, ending at the channel's top.
	c.Send(map[string]any{"type": "history", "channel": "user:42", "limit": 1000})
	f := c.Expect("history")
	got := f.Offsets()
	if f["truncated"] != true || len(got) < 10 || len(got) >= 200 || got[len(got)-1] != 200 || got[0] != uint64(201-len(got)) {
		t.Fatalf("newest: truncated %v, offsets %v", f["truncated"], got)
	}

	// With since: pages after it, each continuing where the last ended.
	epoch, since, pages := f.String("epoch"), uint64(0), 0
	for {
		c.Send(map[string]any{"type": "history", "channel": "user:42", "limit": 1000, "since": map[string]any{"offset": since, "epoch": epoch}})
		f = c.Expect("history")
		pages++
		for _, o := range f.Offsets() {
			if o != since+1 {
				t.Fatalf("page %d: offset %d after %d", pages, o, since)
			}
			since = o
		}
		if f["truncated"] != true {
			break
		}
	}
	if since != 200 || pages < 4 {
		t.Fatalf("paged to %d in %d pages", since, pages)
	}

	// A reply that fits says nothing of truncation; the connection is fine.
	c.Send(map[string]any{"type": "history", "channel": "user:42", "limit": 3})
	if f = c.Expect("history"); f["truncated"] != nil || len(f.Offsets()) != 3 {
		t.Fatalf("small reply %v", f)
	}
	c.Send(map[string]any{"type": "ping"})
	c.Expect("pong")
}

// A publication larger than a history frame's bound is still sent, alone;
// the broker stops reading there, and the reply says more is left.
func TestHistory_OnePublicationOverTheBoundSaysTruncated(t *testing.T) {
	n := start(t, func(c *server.Config) { c.Hub.SendQueueBytes = 64 << 10 }) // a 32 KiB bound
	pad := strings.Repeat("x", 40<<10)
	for i := 1; i <= 3; i++ {
		n.PublishDirect(t, "user:42", fmt.Sprintf(`{"n":%d,"pad":%q}`, i, pad))
	}
	c := heraldtest.Connect(t, n, heraldtest.Token(t, "42", ""))
	c.Send(map[string]any{"type": "history", "channel": "user:42", "limit": 10})
	f := c.Expect("history")
	if got := f.Offsets(); len(got) != 1 || got[0] != 3 || f["truncated"] != true {
		t.Fatalf("newest: offsets %v, truncated %v", got, f["truncated"])
	}
	c.Send(map[string]any{"type": "history", "channel": "user:42", "limit": 10, "since": map[string]any{"offset": 0, "epoch": f.String("epoch")}})
	f = c.Expect("history")
	if got := f.Offsets(); len(got) != 1 || got[0] != 1 || f["truncated"] != true {
		t.Fatalf("since 0: offsets %v, truncated %v", got, f["truncated"])
	}
	c.Send(map[string]any{"type": "history", "channel": "user:42", "limit": 10, "since": map[string]any{"offset": 2, "epoch": f.String("epoch")}})
	if f = c.Expect("history"); len(f.Offsets()) != 1 || f["truncated"] != nil {
		t.Fatalf("since 2, the last: %v", f["truncated"])
	}
}

// History replies carry data as it was published, as live frames do:
// escaped for HTML, each "<" would take six bytes, and a reply of a
// publication near the bound could not be sent at all.
func TestHistory_DataIsSentAsPublished(t *testing.T) {
	n := start(t, func(c *server.Config) { c.Hub.SendQueueBytes = 64 << 10 }) // a 32 KiB bound
	data := `"` + strings.Repeat("<&>", 10<<10) + `"`                         // 30 KiB, 180 escaped
	n.PublishDirect(t, "user:42", data)
	c := heraldtest.Connect(t, n, heraldtest.Token(t, "42", ""))
	c.Send(map[string]any{"type": "history", "channel": "user:42", "limit": 1})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, msg, err := c.Conn.Read(ctx)
	if err != nil {
		t.Fatalf("no history reply: %v", err)
	}
	if !strings.Contains(string(msg), `"data":`+data) {
		t.Fatalf("reply of %d bytes does not carry the data as published: %.200s", len(msg), msg)
	}
}

// History replies asked for back to back can together outgrow the send
// queue, which counts a reply until the node's write of it returned: a
// client that asks for three large pages before it reads the first must
// still get all three, not 4009, and every frame in the order it was sent:
// a pong or a publication does not overtake a reply waiting for room.
func TestHistory_RepliesAskedBackToBackAllArrive(t *testing.T) {
	n := start(t, func(c *server.Config) { c.Hub.SendQueueBytes = 3 << 20 })
	pad := strings.Repeat("x", 1200<<10) // each reply 1.2 MiB: three overflow the 3 MiB queue
	var epoch string
	for i := 1; i <= 3; i++ {
		epoch = n.PublishDirect(t, "user:42", fmt.Sprintf(`{"n":%d,"pad":%q}`, i, pad)).Epoch
	}
	// A small receive buffer: the node's write of the first reply blocks
	// until the client reads, so the reply still counts when the next
	// requests arrive.
	conn, r := upgradeRaw(t, n, "")
	_ = conn.(*net.TCPConn).SetReadBuffer(128 << 10)
	frames := wsFrame(1, fmt.Appendf(nil, `{"id":1,"type":"connect","token":%q}`, heraldtest.Token(t, "42", "m1")))
	frames = append(frames, wsFrame(1, []byte(`{"id":2,"type":"subscribe","channel":"user:42"}`))...)
	for i := range 3 {
		frames = append(frames, wsFrame(1, fmt.Appendf(nil,
			`{"id":%d,"type":"history","channel":"user:42","limit":1,"since":{"offset":%d,"epoch":%q}}`, i+3, i, epoch))...)
	}
	frames = append(frames, wsFrame(1, []byte(`{"id":6,"type":"ping"}`))...)
	// The node answers frames in order: once this one's subscription
	// counts, every frame before it was answered.
	frames = append(frames, wsFrame(1, []byte(`{"id":7,"type":"subscribe","channel":"merchant:m1"}`))...)
	if _, err := conn.Write(frames); err != nil {
		t.Fatal(err)
	}
	n.WaitMetric(t, 1, "herald_subscriptions", "namespace", "merchant")
	n.PublishDirect(t, "user:42", `{"n":4}`)

	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	// The subscription counts a moment before its reply is queued: the
	// publication may come before that reply, never before the others.
	want := []string{"connected 1", "subscribed 2", "history 3 [1]", "history 4 [2]", "history 5 [3]", "pong 6", "subscribed 7", "pub 0 4"}
	var gots []string
	for i := range want {
		op, payload := readFrame(t, r)
		var f struct {
			ID           int
			Type         string
			Offset       int
			Publications []struct{ Offset int }
		}
		if op != 1 || json.Unmarshal(payload, &f) != nil {
			t.Fatalf("frame %d: opcode %d, %.200s", i, op, payload)
		}
		got := fmt.Sprintf("%s %d", f.Type, f.ID)
		switch f.Type {
		case "history":
			var offsets []int
			for _, p := range f.Publications {
				offsets = append(offsets, p.Offset)
			}
			got += fmt.Sprint(" ", offsets)
		case "pub":
			got += fmt.Sprint(" ", f.Offset)
		}
		gots = append(gots, got)
	}
	// The last two in either order, each once.
	slices.Sort(gots[6:])
	slices.Sort(want[6:])
	if !slices.Equal(gots, want) {
		t.Fatalf("frames %q, want %q", gots, want)
	}
}

// What waits beyond the send queue is bounded too: a client that keeps
// asking and never reads is closed as too slow.
func TestHistory_AskingWithoutReadingIsClosed4009(t *testing.T) {
	n := start(t, func(c *server.Config) {
		c.Hub.SendQueueBytes = 1 << 20
		c.Hub.FrameRate, c.Hub.FrameBurst = 1000, 1000
	})
	n.PublishDirect(t, "user:42", fmt.Sprintf(`{"pad":%q}`, strings.Repeat("x", 400<<10)))
	c := heraldtest.Connect(t, n, heraldtest.Token(t, "42", ""))
	for range 100 { // 40 MiB asked for, past any socket buffer
		c.Send(map[string]any{"type": "history", "channel": "user:42", "limit": 1})
	}
	if code := c.CloseStatus(10 * time.Second); code != hub.StatusTooSlow {
		t.Fatalf("close code %d, want 4009", code)
	}
}

func TestProtocolErrorsClose4002(t *testing.T) {
	n := start(t, nil)
	cases := map[string]func(c *heraldtest.Client){
		"not JSON":     func(c *heraldtest.Client) { c.SendRaw([]byte("{nope")) },
		"array":        func(c *heraldtest.Client) { c.SendRaw([]byte(`[{"type":"ping"}]`)) },
		"string":       func(c *heraldtest.Client) { c.SendRaw([]byte(`"ping"`)) },
		"unknown type": func(c *heraldtest.Client) { c.Send(map[string]any{"type": "publish"}) },
		"no type":      func(c *heraldtest.Client) { c.Send(map[string]any{"channel": "user:42"}) },
		"unknown type, a field of the wrong type": func(c *heraldtest.Client) { c.SendRaw([]byte(`{"type":"bogus","id":"x"}`)) },
		"no type, a field of the wrong type":      func(c *heraldtest.Client) { c.SendRaw([]byte(`{"channel":5}`)) },
		"binary": func(c *heraldtest.Client) {
			_ = c.Conn.Write(context.Background(), websocket.MessageBinary, []byte(`{"type":"ping"}`))
		},
		"invalid UTF-8": func(c *heraldtest.Client) { c.SendRaw([]byte("{\"type\":\"ping\",\"x\":\"\xff\"}")) },
	}
	for name, act := range cases {
		t.Run(name, func(t *testing.T) {
			c := heraldtest.Connect(t, n, heraldtest.Token(t, "42", ""))
			act(c)
			if code := c.CloseStatus(5 * time.Second); code != hub.StatusProtocolError {
				t.Fatalf("close code %d, want 4002", code)
			}
		})
	}
}

// A client authenticated by its upgrade header that errs at once still
// gets its connected frame first: the close that follows drops what is
// queued, and connected must not be among it.
func TestConnectedBeforeAnImmediateProtocolError(t *testing.T) {
	n := start(t, nil)
	h := http.Header{"Authorization": {"Bearer " + heraldtest.Token(t, "42", "")}}
	for range 50 {
		c := heraldtest.DialHeader(t, n, h)
		c.SendRaw([]byte("{nope"))
		if f, err := c.ReadTimeout(5 * time.Second); err != nil || f.Type() != "connected" {
			t.Fatalf("first frame %v (%v), want connected", f, err)
		}
		if code := c.CloseStatus(5 * time.Second); code != hub.StatusProtocolError {
			t.Fatalf("close code %d, want 4002", code)
		}
		_ = c.Conn.CloseNow()
	}
}

func TestOversizeFrameCloses1009(t *testing.T) {
	n := start(t, nil)
	c := heraldtest.Connect(t, n, heraldtest.Token(t, "42", ""))
	big := fmt.Sprintf(`{"type":"ping","pad":"%s"}`, strings.Repeat("x", 64<<10))
	_ = c.Conn.Write(context.Background(), websocket.MessageText, []byte(big))
	if code := c.CloseStatus(5 * time.Second); code != websocket.StatusMessageTooBig {
		t.Fatalf("close code %d, want 1009", code)
	}
	// A frame of exactly the limit is fine.
	c = heraldtest.Connect(t, n, heraldtest.Token(t, "42", ""))
	pad := 64<<10 - len(`{"type":"ping","pad":""}`)
	c.SendRaw([]byte(fmt.Sprintf(`{"type":"ping","pad":"%s"}`, strings.Repeat("x", pad))))
	c.Expect("pong")
}

// A frame the websocket library itself refuses (here an unknown opcode)
// is answered with a 1002 close, and the session is counted as ended by
// it, not as a connection that went away (1006).
func TestFrameTheLibraryRefusesCloses1002AndIsCountedSo(t *testing.T) {
	n := start(t, nil)
	conn, r := upgradeRaw(t, n, "Authorization: Bearer "+heraldtest.Token(t, "42", "")+"\r\n")
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write(wsFrame(3, nil)); err != nil {
		t.Fatal(err)
	}
	op, payload := readFrame(t, r)
	for op != 0x8 { // connected first
		op, payload = readFrame(t, r)
	}
	if len(payload) < 2 || binary.BigEndian.Uint16(payload) != 1002 {
		t.Fatalf("close frame %x, want code 1002", payload)
	}
	n.WaitMetric(t, 0, "herald_connections")
	m := n.Metrics(t)
	if got := m.Get("herald_closes_total", "code", "1002"); got != 1 {
		t.Errorf("closes with 1002: %v (1006: %v)", got, m.Get("herald_closes_total", "code", "1006"))
	}
}

// A client may close with any code, herald's own among them: it is
// counted as "other", so that a client's 4009 never reads as a send queue
// overflow on herald's dashboards. 1000 is counted as itself.
func TestClientsOwnCloseCodesAreCountedAsOther(t *testing.T) {
	n := start(t, nil)
	for _, code := range []websocket.StatusCode{4009, 4001, websocket.StatusNormalClosure} {
		c := heraldtest.Connect(t, n, heraldtest.Token(t, "42", ""))
		_ = c.Conn.Close(code, "bye")
	}
	n.WaitMetric(t, 0, "herald_connections")
	m := n.Metrics(t)
	for label, want := range map[string]float64{"4009": 0, "4001": 0, "other": 2, "1000": 1} {
		if got := m.Get("herald_closes_total", "code", label); got != want {
			t.Errorf("closes with %s: %v, want %v", label, got, want)
		}
	}
	if got := m.Get("herald_send_queue_overflows_total"); got != 0 {
		t.Errorf("overflows: %v, want 0", got)
	}
}

func TestTokenExpiryCloses4008UnlessRefreshed(t *testing.T) {
	n := start(t, nil)
	// Lifetimes long enough for two connects and a refresh on a loaded
	// machine. The refreshed client's first token expires two seconds
	// before the other's: once the other is closed, it would have been too.
	now := time.Now()
	mint := func(ttl time.Duration) string {
		tok, err := auth.Mint([]byte(heraldtest.Secret), auth.NewClaims("42", "", nil, ttl, now))
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	expiring := heraldtest.Connect(t, n, mint(12*time.Second))
	refreshed := heraldtest.Connect(t, n, mint(10*time.Second))
	refreshed.Send(map[string]any{"id": 5, "type": "refresh", "token": heraldtest.Token(t, "42", "")})
	f := refreshed.Expect("refreshed")
	if f["id"] != float64(5) || f["expires"].(float64) < float64(time.Now().Add(50*time.Minute).Unix()) {
		t.Fatalf("refreshed %v", f)
	}
	if code := expiring.CloseStatus(30 * time.Second); code != hub.StatusTokenExpired {
		t.Fatalf("close code %d, want 4008", code)
	}
	refreshed.Send(map[string]any{"type": "ping"})
	refreshed.Expect("pong")
}

func TestRefresh_Refusals(t *testing.T) {
	n := start(t, nil)
	c := heraldtest.Connect(t, n, heraldtest.Token(t, "42", "acme"))
	c.Subscribe("merchant:acme")
	for _, tok := range []string{heraldtest.Token(t, "43", "acme"), "garbage", heraldtest.TokenTTL(t, -time.Minute, "42", "")} {
		c.Send(map[string]any{"type": "refresh", "token": tok})
		if f := c.Expect("error"); f.String("code") != "forbidden" {
			t.Fatalf("refresh with %q: %v", tok, f)
		}
	}
	// No token at all is the client's mistake, not a refusal.
	c.Send(map[string]any{"type": "refresh"})
	if f := c.Expect("error"); f.String("code") != "bad_request" {
		t.Fatalf("refresh without a token: %v", f)
	}
	// A token that no longer grants the merchant drops that subscription.
	c.Send(map[string]any{"type": "refresh", "token": heraldtest.Token(t, "42", "")})
	c.Expect("refreshed")
	if f := c.Expect("unsubscribed"); f.String("channel") != "merchant:acme" {
		t.Fatalf("got %v", f)
	}
}

func TestServerPingsDropDeadPeers(t *testing.T) {
	n := start(t, func(c *server.Config) {
		c.Hub.PingInterval = 100 * time.Millisecond
		c.Hub.PongTimeout = time.Second
	})
	alive := heraldtest.Connect(t, n, heraldtest.Token(t, "42", ""))
	dead := heraldtest.Connect(t, n, heraldtest.Token(t, "43", ""))
	// alive keeps reading (which answers pings) until the test is done,
	// with no deadline of its own: one would close it. dead does not read.
	ctx, stop := context.WithCancel(context.Background())
	pongs := make(chan heraldtest.Frame, 100)
	readErr := make(chan error, 1)
	go func() {
		for {
			_, b, err := alive.Conn.Read(ctx)
			if err != nil {
				readErr <- err
				close(readErr)
				return
			}
			var f heraldtest.Frame
			_ = json.Unmarshal(b, &f)
			pongs <- f
		}
	}()
	defer func() {
		stop()
		for range readErr {
		}
	}()
	for deadline := time.Now().Add(10 * time.Second); n.Server.Hub().Clients() != 1; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d clients connected, want only the one answering pings", n.Server.Hub().Clients())
		}
	}
	time.Sleep(1500 * time.Millisecond) // a dozen more pings, each answered
	if got := n.Server.Hub().Clients(); got != 1 {
		t.Fatalf("%d clients connected, want the one answering pings", got)
	}
	// The node closed the dead peer's connection: its read ends at once,
	// not at the deadline.
	if _, err := dead.ReadTimeout(10 * time.Second); err == nil || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("dead peer's connection still open: %v", err)
	}
	alive.Send(map[string]any{"type": "ping"})
	select {
	case f := <-pongs:
		if f.Type() != "pong" {
			t.Fatalf("got %v", f)
		}
	case err := <-readErr:
		t.Fatalf("live client was dropped: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("no pong for the live client")
	}
}

func TestDrainCloses4010AndRefusesNewClients(t *testing.T) {
	n := start(t, nil)
	a := heraldtest.Connect(t, n, heraldtest.Token(t, "1", ""))
	b := heraldtest.Connect(t, n, heraldtest.Token(t, "2", ""))
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		done <- n.Server.Drain(ctx, 200*time.Millisecond)
	}()
	for _, c := range []*heraldtest.Client{a, b} {
		if code := c.CloseStatus(5 * time.Second); code != hub.StatusShuttingDown {
			t.Fatalf("close code %d, want 4010", code)
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, resp, err := websocket.Dial(ctx, n.WS(), nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("dial while draining: %v %v", err, resp)
	}
	var body map[string]string
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" || json.NewDecoder(resp.Body).Decode(&body) != nil || body["error"] != "node shutting down" {
		t.Fatalf("refused upgrade: %s %v", ct, body)
	}
	if status, _ := n.Get(t, "/readyz"); status != http.StatusServiceUnavailable {
		t.Fatalf("readyz while draining: %d", status)
	}
}
