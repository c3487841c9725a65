package hub_test

import (
	"context"
	"net/http"
	"net/netip"
	"testing"
	"time"

	"github.com/coder/websocket"

	"herald/hub"
	"herald/internal/heraldtest"
	"herald/internal/server"
)

func TestConnectionsPerAddressAreLimited(t *testing.T) {
	n := start(t, func(c *server.Config) { c.Hub.MaxConnsPerIP = 3 })
	var open []*heraldtest.Client
	for i := 0; i < 3; i++ {
		open = append(open, heraldtest.Connect(t, n, heraldtest.Token(t, "42", "")))
	}
	flood := heraldtest.Dial(t, n)
	if code := flood.CloseStatus(5 * time.Second); code != hub.StatusRateLimited {
		t.Fatalf("the 4th connection from one address: close %d, want 4029", code)
	}
	// The ones already open are untouched, and a slot freed is reusable.
	open[0].Send(map[string]any{"type": "ping"})
	open[0].Expect("pong")
	_ = open[1].Conn.Close(websocket.StatusNormalClosure, "")
	deadline := time.Now().Add(5 * time.Second)
	for n.Server.Hub().Clients() != 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	heraldtest.Connect(t, n, heraldtest.Token(t, "42", ""))
}

func TestConnectionsPerAddressBehindTrustedProxies(t *testing.T) {
	n := start(t, func(c *server.Config) {
		c.Hub.MaxConnsPerIP = 2
		c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	})
	from := func(addr string) *heraldtest.Client {
		return heraldtest.DialHeader(t, n, http.Header{
			"X-Forwarded-For": {addr},
			"Authorization":   {"Bearer " + heraldtest.Token(t, "42", "")},
		})
	}
	for _, addr := range []string{"198.51.100.1", "198.51.100.1", "198.51.100.2", "198.51.100.2"} {
		from(addr).Expect("connected")
	}
	if code := from("198.51.100.1").CloseStatus(5 * time.Second); code != hub.StatusRateLimited {
		t.Fatalf("third connection of one client behind the proxy: %d", code)
	}
	from("198.51.100.3").Expect("connected")
}

func TestFramesTooFastClose4029(t *testing.T) {
	n := start(t, func(c *server.Config) {
		c.Hub.FrameRate = 20
		c.Hub.FrameBurst = 30
	})
	sane := heraldtest.Connect(t, n, heraldtest.Token(t, "42", ""))
	for i := 0; i < 10; i++ {
		sane.Send(map[string]any{"type": "ping"})
		sane.Expect("pong")
		time.Sleep(60 * time.Millisecond)
	}
	flood := heraldtest.Connect(t, n, heraldtest.Token(t, "43", ""))
	for i := 0; i < 200; i++ {
		b := []byte(`{"type":"ping"}`)
		if err := flood.Conn.Write(context.Background(), websocket.MessageText, b); err != nil {
			break
		}
	}
	if code := flood.CloseStatus(5 * time.Second); code != hub.StatusRateLimited {
		t.Fatalf("a client flooding frames: close %d, want 4029", code)
	}
	sane.Send(map[string]any{"type": "ping"})
	sane.Expect("pong")
}
